//! Network access: an instance's ACL as clients send and read it, and where clients connect.

use domain::instance::AclEntry as DomainAclEntry;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One allowed source block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// an IPv4 or IPv6 block in canonical CIDR form (host bits zero; IPv6 lowercase and compressed).
    /// Anything else is refused with the canonical form in the message, never rewritten, so what is
    /// sent is what is read back.
    #[schema(
        example = "203.0.113.0/24",
        min_length = 4,
        max_length = 43,
        pattern = r"^[0-9a-f.:]+/[0-9]{1,3}$"
    )]
    pub cidr: String,
    /// free text, at most 128 characters
    #[serde(default)]
    #[schema(max_length = 128)]
    pub description: String,
}

impl From<AclEntry> for DomainAclEntry {
    fn from(e: AclEntry) -> Self {
        DomainAclEntry::new(e.cidr, e.description)
    }
}

impl From<&DomainAclEntry> for AclEntry {
    fn from(e: &DomainAclEntry) -> Self {
        Self { cidr: e.cidr.clone(), description: e.description.clone() }
    }
}

/// The ACL of an instance: a set, sorted by CIDR. Empty: nothing outside the instance may connect, and
/// the instance has no endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Acl {
    /// the entries, sorted by CIDR
    pub entries: Vec<AclEntry>,
    /// version of the instance's desired state; also its ETag
    pub instance_version: u64,
}

/// Body of `PUT …/acl`: the whole new set. Order does not matter; the same set in another order changes
/// nothing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclReplaceRequest {
    /// at most 100 entries, each CIDR once
    #[schema(max_items = 100)]
    pub entries: Vec<AclEntry>,
    /// must be true for `0.0.0.0/0` or `::/0` (every address) to be accepted
    #[serde(default)]
    pub allow_public: bool,
}

/// Body of `POST …/acl`: one entry to add (an entry with the same CIDR gets this description).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclAddRequest {
    /// the block, in canonical CIDR form
    #[schema(
        example = "198.51.100.7/32",
        min_length = 4,
        max_length = 43,
        pattern = r"^[0-9a-f.:]+/[0-9]{1,3}$"
    )]
    pub cidr: String,
    /// free text, at most 128 characters
    #[serde(default)]
    #[schema(max_length = 128)]
    pub description: String,
    /// must be true for `0.0.0.0/0` or `::/0`
    #[serde(default)]
    pub allow_public: bool,
}

/// Where clients connect to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Connection {
    /// IP address or host name the cluster's load balancer published
    pub host: String,
    /// TCP port
    pub port: u16,
}

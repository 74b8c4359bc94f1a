//! Network access: the source addresses allowed to connect to an instance, as a set of CIDR blocks.
//!
//! The ACL is a set. Entries are kept sorted by CIDR and each CIDR appears once, so the order a client
//! sends never shows as a change, and a replacement with the same set in another order emits no event.
//! A CIDR must be written in canonical form (`10.0.0.0/8`, lowercase and compressed IPv6, host bits
//! zero); anything else is refused with the canonical form in the message rather than rewritten, so what
//! a client (a Terraform configuration) sends is exactly what it reads back and never shows as a diff.

use std::str::FromStr as _;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{InstanceError, Violation};

/// Most entries an ACL may hold.
pub const MAX_ACL_ENTRIES: usize = 100;
/// Longest entry description, in characters.
pub const MAX_ACL_DESCRIPTION_CHARS: usize = 128;

/// One allowed source block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// an IPv4 or IPv6 block in canonical CIDR form
    pub cidr: String,
    /// free text
    #[serde(default)]
    pub description: String,
}

impl AclEntry {
    /// An entry with a description.
    pub fn new(cidr: impl Into<String>, description: impl Into<String>) -> Self {
        Self { cidr: cidr.into(), description: description.into() }
    }
}

/// Whether a block admits every address of its family (`0.0.0.0/0`, `::/0`).
fn is_everything(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// Checks one entry; `field` is the JSON pointer of the entry in the request (`/entries/3`).
fn check_entry(entry: &AclEntry, field: &str, allow_public: bool, violations: &mut Vec<Violation>) {
    let cidr_field = format!("{field}/cidr");
    let mut violation = |field: String, rule: &'static str, message: String| {
        violations.push(Violation { field, rule, message });
    };
    match IpNet::from_str(&entry.cidr) {
        Err(_) => violation(
            cidr_field,
            "cidr",
            format!("{:?} is not a CIDR block such as 203.0.113.0/24 or 2001:db8::/32", entry.cidr),
        ),
        Ok(net) if net.trunc() != net => violation(
            cidr_field,
            "cidr_host_bits_zero",
            format!("{} has host bits set; the block is {}", entry.cidr, net.trunc()),
        ),
        Ok(net) if net.to_string() != entry.cidr => violation(
            cidr_field,
            "cidr_canonical",
            format!("{:?} is not in canonical form; write it as {net}", entry.cidr),
        ),
        Ok(net) if is_everything(&net) && !allow_public => violation(
            cidr_field,
            "public_access_flag",
            format!("{net} admits every address; set allow_public to true to allow it"),
        ),
        Ok(_) => {}
    }
    if entry.description.chars().count() > MAX_ACL_DESCRIPTION_CHARS {
        violation(
            format!("{field}/description"),
            "max_length",
            format!("must be at most {MAX_ACL_DESCRIPTION_CHARS} characters"),
        );
    } else if entry.description.chars().any(char::is_control) {
        violation(
            format!("{field}/description"),
            "no_control_characters",
            "must not contain control characters".into(),
        );
    }
}

/// Checks a whole ACL, as sent at `field` (`/entries`), naming every bad entry; returns it as a set
/// (sorted by CIDR). Needs nothing but the request, so an edge can run it before anything else (before
/// an `If-Match` is judged).
pub fn check_acl(
    entries: &[AclEntry],
    field: &str,
    allow_public: bool,
) -> Result<Vec<AclEntry>, InstanceError> {
    let mut violations = Vec::new();
    if entries.len() > MAX_ACL_ENTRIES {
        violations.push(Violation {
            field: field.to_owned(),
            rule: "max_items",
            message: format!("an ACL holds at most {MAX_ACL_ENTRIES} entries, not {}", entries.len()),
        });
    }
    for (index, entry) in entries.iter().enumerate() {
        check_entry(entry, &format!("{field}/{index}"), allow_public, &mut violations);
        if let Some(first) = entries[..index].iter().position(|e| e.cidr == entry.cidr) {
            violations.push(Violation {
                field: format!("{field}/{index}/cidr"),
                rule: "unique_cidr",
                message: format!("{} is already entry {first}", entry.cidr),
            });
        }
    }
    super::rules::into_result(violations)?;
    let mut set = entries.to_vec();
    set.sort();
    Ok(set)
}

/// Checks one entry alone, sent at `field` (`` for a request body that is the entry), as
/// [`check_acl`] does for each.
pub fn check_acl_entry(entry: &AclEntry, field: &str, allow_public: bool) -> Result<(), InstanceError> {
    let mut violations = Vec::new();
    check_entry(entry, field, allow_public, &mut violations);
    super::rules::into_result(violations)
}

/// Checks one entry to add to `acl`, sent at `field` (`` for a request body that is the entry).
pub(super) fn check_new_entry(
    acl: &[AclEntry],
    entry: &AclEntry,
    field: &str,
    allow_public: bool,
) -> Result<(), InstanceError> {
    let mut violations = Vec::new();
    check_entry(entry, field, allow_public, &mut violations);
    if acl.len() >= MAX_ACL_ENTRIES && !acl.iter().any(|e| e.cidr == entry.cidr) {
        violations.push(Violation {
            field: format!("{field}/cidr"),
            rule: "max_items",
            message: format!("the ACL already holds {MAX_ACL_ENTRIES} entries, the most it may"),
        });
    }
    super::rules::into_result(violations)
}

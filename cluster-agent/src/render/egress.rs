//! Default egress of a project namespace: where the pods the agent makes there may connect. Without a
//! policy selecting them for egress a pod may connect anywhere (k8s.io/api v0.36.1
//! `networking/v1/types.go`, `NetworkPolicySpec.policyTypes`: only a policy whose `policyTypes` holds
//! `Egress` isolates the pods it selects for egress, and the pod may then reach only the union of what
//! the egress rules of every such policy allow) — including the cloud's metadata service on link-local
//! `169.254.169.254` and every other namespace's services. So each project namespace gets, owned by the
//! agent (made with the namespace, put back when deleted or edited: `crate::egress`):
//!
//! - [`POLICY_NAME`], on every pod of the namespace (`podSelector: {}`), allowing
//!   - DNS: the cluster's resolver, pods labelled `k8s-app: kube-dns` in namespace `kube-system`
//!     (selected by its `kubernetes.io/metadata.name` label, which kube-apiserver sets on every namespace),
//!     on UDP and TCP 53 (a peer with both `namespaceSelector` and `podSelector` selects the pods matching
//!     the pod selector in the namespaces matching the namespace selector: `NetworkPolicyPeer`);
//!   - the instances' own pods in this namespace (any pod carrying [`super::INSTANCE_LABEL`]): replicas
//!     reach each other, the agent's Jobs (rotation, backup, restore) reach their instance. A namespace-
//!     wide rule cannot say "the same instance" (a peer selects by fixed labels, never by the source's
//!     own), so this admits every instance of the project; each instance's own ingress policy
//!     (`render/network.rs`) then admits only its own pods and its own Jobs (`CLIENT_OF_LABEL`), and a
//!     connection needs both the source's egress and the destination's ingress to allow it;
//!   - the backup store, when the agent has one: its address blocks on its port. Every pod of the
//!     namespace, because three kinds of them reach it: the backup and restore Jobs, Grafana's pod (its
//!     restore init container) and PostgreSQL's pods (the Barman Cloud plugin's sidecar archives WAL from
//!     inside the instance pod). The store's own credentials still decide what they may read or write.
//! - [`API_SERVER_POLICY_NAME`], on CloudNativePG's pods only (label `cnpg.io/cluster`, which it puts on
//!   its instance pods and its bootstrap Jobs' pods: CloudNativePG v1.30.0 `pkg/specs/pods.go` and
//!   `pkg/specs/jobs.go`, `utils.ClusterLabelName`), allowing the Kubernetes API server: "The instance
//!   manager, which is the entry point of the operand container, needs to make some calls to the
//!   Kubernetes API server" (CloudNativePG v1.30.0 `docs/src/security.md`, *Calls to the API server made
//!   by the instance manager*). Nothing else of CloudNativePG's needs egress beyond the rules above: the
//!   operator connects *to* the pods (status port 8000, PostgreSQL 5432: same document, *Exposed Ports*;
//!   admitted by the instance's ingress policy), and the instances reach each other.
//!
//! - [`USERS_API_SERVER_POLICY_NAME`], on the pods of the users Jobs that write a token the service made
//!   into its user's Secret (label `WRITES_SECRETS_LABEL`, `render/user_tokens.rs`), allowing the API server
//!   likewise. Without the API server's blocks (`--api-server-cidr`) such a Job cannot hand its token over,
//!   and fails.
//!
//! Nothing else: no rule names link-local addresses, and a configured block that overlaps them
//! (`169.254.0.0/16`, `fe80::/10`) is refused ([`EgressSettings`]). Addresses are `ipBlock`s, so they
//! must be the addresses the packets carry when the network plugin evaluates the policy: for the API
//! server, the addresses and port of the `default/kubernetes` EndpointSlice, not the Service's cluster IP,
//! which kube-proxy rewrites (`IPBlock` documents blocks of addresses, and policies on Service IPs are
//! left to the plugin); for a store named by a host name, the blocks it resolves into, which only the
//! operator knows (`--backup-store-cidr`).

use std::{net::IpAddr, str::FromStr as _};

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{INSTANCE_LABEL, backup::StoreTarget};

/// Name of the namespace-wide egress policy.
pub const POLICY_NAME: &str = "cp-egress";
/// Name of the policy letting CloudNativePG's pods reach the API server.
pub const API_SERVER_POLICY_NAME: &str = "cp-egress-api-server";
/// Name of the egress policy letting the users Jobs (pods labelled
/// [`super::user_tokens::WRITES_SECRETS_LABEL`]) reach the API server, when its blocks are known.
pub const USERS_API_SERVER_POLICY_NAME: &str = "cp-egress-api-server-users";
/// Label selector of the egress policies, for the agent's watch of them.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=cp-cluster-agent,app.kubernetes.io/component=egress";
/// The port kube-apiserver serves on unless told otherwise (`--secure-port`, default 6443).
pub const DEFAULT_API_SERVER_PORT: u16 = 6443;

/// Where the pods' egress may go beyond DNS and their instances, as the operator configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSettings {
    /// the backup store's address blocks; empty: the store endpoint's own address, when it is one
    pub store_blocks: Vec<IpNet>,
    /// the Kubernetes API server's address blocks (the `default/kubernetes` EndpointSlice's addresses);
    /// empty: CloudNativePG's pods get no egress to it, and PostgreSQL cannot run under a plugin that
    /// enforces policies
    pub api_server_blocks: Vec<IpNet>,
    /// the API server's port as the pods' packets carry it (the EndpointSlice's port)
    pub api_server_port: u16,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            store_blocks: Vec::new(),
            api_server_blocks: Vec::new(),
            api_server_port: DEFAULT_API_SERVER_PORT,
        }
    }
}

/// Why egress settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// a block overlaps link-local addresses, where clouds serve instance metadata and credentials
    #[error("{0} overlaps link-local addresses (169.254.0.0/16, fe80::/10: the cloud's metadata service)")]
    LinkLocal(IpNet),
    /// the store endpoint is not a URL with a host
    #[error("the backup store endpoint {0:?} is not an http(s) URL with a host")]
    Endpoint(String),
}

/// The egress the agent renders, resolved from its settings and its backup store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Egress {
    /// the store's blocks and port; `None` without a store, or with one named by a host name and no
    /// block given
    store: Option<(Vec<IpNet>, u16)>,
    /// the API server's blocks and port; `None` without blocks
    api_server: Option<(Vec<IpNet>, u16)>,
    /// a store named by a host name was given no block: backups cannot reach it under enforcement
    pub store_unreachable: bool,
}

/// Whether `net` shares an address with a link-local block.
fn is_link_local(net: &IpNet) -> bool {
    let link_local = [
        IpNet::from_str("169.254.0.0/16").expect("a CIDR"),
        IpNet::from_str("fe80::/10").expect("a CIDR"),
        // an IPv4-mapped IPv6 block reaches the IPv4 addresses it maps
        IpNet::from_str("::ffff:169.254.0.0/112").expect("a CIDR"),
    ];
    link_local.iter().any(|l| l.contains(net) || net.contains(l))
}

fn checked(blocks: &[IpNet]) -> Result<Vec<IpNet>, EgressError> {
    blocks
        .iter()
        .map(|b| if is_link_local(b) { Err(EgressError::LinkLocal(*b)) } else { Ok(b.trunc()) })
        .collect()
}

/// The host and port of an `http(s)://host[:port][/…]` endpoint (ports 80 and 443 by default).
pub fn endpoint_host_port(endpoint: &str) -> Option<(String, u16)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl Egress {
    /// Resolves the settings against the store the backup Jobs use. A store endpoint that is an address
    /// is its own block (`/32` or `/128`) unless blocks are given.
    pub fn new(settings: &EgressSettings, store: Option<&StoreTarget>) -> Result<Self, EgressError> {
        let mut egress = Self::default();
        if let Some(store) = store {
            let (host, port) = endpoint_host_port(&store.endpoint)
                .ok_or_else(|| EgressError::Endpoint(store.endpoint.clone()))?;
            let blocks = if settings.store_blocks.is_empty() {
                host.parse::<IpAddr>().ok().map(|ip| vec![IpNet::from(ip)]).unwrap_or_default()
            } else {
                settings.store_blocks.clone()
            };
            let blocks = checked(&blocks)?;
            egress.store_unreachable = blocks.is_empty();
            egress.store = (!blocks.is_empty()).then_some((blocks, port));
        }
        let api_server = checked(&settings.api_server_blocks)?;
        egress.api_server = (!api_server.is_empty()).then_some((api_server, settings.api_server_port));
        Ok(egress)
    }

    /// Whether CloudNativePG's pods may reach the API server.
    pub fn reaches_api_server(&self) -> bool {
        self.api_server.is_some()
    }

    /// The egress policies of `namespace`: [`POLICY_NAME`] always, [`API_SERVER_POLICY_NAME`] when the
    /// API server's blocks are known.
    pub fn policies(&self, namespace: &str) -> Vec<Value> {
        let tcp = |port: u16| json!({"protocol": "TCP", "port": port});
        let blocks = |blocks: &[IpNet]| -> Vec<Value> {
            blocks.iter().map(|b| json!({"ipBlock": {"cidr": b.to_string()}})).collect()
        };
        let mut egress = vec![
            json!({
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"protocol": "UDP", "port": 53}, tcp(53)],
            }),
            json!({"to": [{"podSelector": {"matchExpressions": [{"key": INSTANCE_LABEL, "operator": "Exists"}]}}]}),
        ];
        if let Some((store, port)) = &self.store {
            egress.push(json!({"to": blocks(store), "ports": [tcp(*port)]}));
        }
        let mut policies = vec![policy(
            namespace,
            POLICY_NAME,
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}),
        )];
        if let Some((api_server, port)) = &self.api_server {
            // To the API server, for the pods carrying `label`: CloudNativePG's, and the users Jobs that hand
            // a service-made token to the cluster (`render::user_tokens`).
            for (name, label) in [
                (API_SERVER_POLICY_NAME, "cnpg.io/cluster"),
                (USERS_API_SERVER_POLICY_NAME, super::user_tokens::WRITES_SECRETS_LABEL),
            ] {
                policies.push(policy(
                    namespace,
                    name,
                    json!({
                        "podSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]},
                        "policyTypes": ["Egress"],
                        "egress": [{"to": blocks(api_server), "ports": [tcp(*port)]}],
                    }),
                ));
            }
        }
        policies
    }
}

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {
            "app.kubernetes.io/managed-by": "cp-cluster-agent",
            "app.kubernetes.io/part-of": "cp",
            "app.kubernetes.io/component": "egress",
        }},
        "spec": spec,
    })
}

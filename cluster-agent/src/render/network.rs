//! Network access: who may connect to an instance. Two objects carry the ACL:
//!
//! - the **endpoint**, a `LoadBalancer` Service named `<instance>-endpoint` whose
//!   `loadBalancerSourceRanges` are the ACL's blocks. Kubernetes (core/v1 `ServiceSpec`, v1.36) documents
//!   `loadBalancerSourceRanges` as the client IPs the cloud provider's load balancer admits, and an empty
//!   list as no restriction at all; so an instance with an empty ACL gets no endpoint rather than one open
//!   to everyone. `externalTrafficPolicy: Local` keeps the client's address on the packet (with `Cluster`
//!   the node rewrites it), so the NetworkPolicy below sees the real source.
//! - a **NetworkPolicy** named `<instance>-access` on the instance's pods (networking.k8s.io/v1): the
//!   instance's own pods may reach each other (replication), the ACL's blocks may reach the service port
//!   (`ipBlock`), the agent's own Jobs that connect to the instance (rotation, backup, restore,
//!   PostgreSQL's configuration check: their pods carry `job::CLIENT_OF_LABEL`) may reach the service
//!   port, and nothing else may, inside the cluster or through the endpoint (networking.k8s.io/v1
//!   `NetworkPolicySpec`: a pod selected by a policy of type Ingress admits only what some rule's peers
//!   and ports allow). For PostgreSQL the CloudNativePG operator, in namespace `cnpg-system`, also
//!   reaches the instance manager's status port 8000 and PostgreSQL's 5432 (CloudNativePG v1.30.0
//!   `pkg/management/url/url.go`: `StatusPort = 8000`).

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::{Child, ChildKind, metadata, selector};
use crate::crd::ManagedInstance;

/// Name of the endpoint Service.
pub fn endpoint_name(mi: &ManagedInstance) -> String {
    format!("{}-endpoint", mi.name_any())
}

/// Name of the NetworkPolicy.
pub fn policy_name(mi: &ManagedInstance) -> String {
    format!("{}-access", mi.name_any())
}

/// The pods clients reach: CloudNativePG's primary (labels from CloudNativePG v1.30.0
/// `pkg/utils/labels_annotations.go`: `ClusterLabelName = "cnpg.io/cluster"`,
/// `ClusterInstanceRoleLabelName = "cnpg.io/instanceRole"`, value `primary`), else every replica.
fn endpoint_selector(mi: &ManagedInstance) -> Value {
    if mi.spec.service == "postgresql" {
        json!({"cnpg.io/cluster": mi.name_any(), "cnpg.io/instanceRole": "primary"})
    } else {
        selector(mi)
    }
}

/// The endpoint Service (none while the ACL is empty) and the NetworkPolicy, for a service on `port`.
pub fn render(mi: &ManagedInstance, port: u16) -> Vec<Child> {
    let service_port = json!({"name": mi.spec.service, "protocol": "TCP", "port": port, "targetPort": port});
    let mut ingress = vec![json!({"from": [{"podSelector": {"matchLabels": selector(mi)}}]})];
    // For PostgreSQL, whose rotation and backups CloudNativePG makes, the one such Job is the
    // configuration check (`pg_settings`).
    ingress.push(json!({
        "from": [{"podSelector": {"matchLabels": {super::job::CLIENT_OF_LABEL: mi.spec.instance_id}}}],
        "ports": [{"protocol": "TCP", "port": port}],
    }));
    if !mi.spec.acl.is_empty() {
        let blocks: Vec<Value> = mi.spec.acl.iter().map(|cidr| json!({"ipBlock": {"cidr": cidr}})).collect();
        ingress.push(json!({"from": blocks, "ports": [{"protocol": "TCP", "port": port}]}));
    }
    if mi.spec.service == "postgresql" {
        ingress.push(json!({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": port}],
        }));
    }
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(mi, &policy_name(mi)),
        "spec": {"podSelector": {"matchLabels": selector(mi)}, "policyTypes": ["Ingress"], "ingress": ingress},
    });
    let mut children = vec![Child { kind: ChildKind::NetworkPolicy, name: policy_name(mi), object: policy }];
    if !mi.spec.acl.is_empty() {
        let endpoint = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": metadata(mi, &endpoint_name(mi)),
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": mi.spec.acl,
                "selector": endpoint_selector(mi),
                "ports": [service_port],
            },
        });
        children.push(Child { kind: ChildKind::Service, name: endpoint_name(mi), object: endpoint });
    }
    children
}

/// The source blocks a NetworkPolicy as the cluster holds it admits, sorted: every `ipBlock` of its
/// ingress rules (`except` lists are never rendered, so none is read).
pub fn admitted_blocks(policy: &Value) -> Vec<String> {
    let mut blocks: Vec<String> = policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["from"].as_array().into_iter().flatten())
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str().map(str::to_owned))
        .collect();
    blocks.sort();
    blocks.dedup();
    blocks
}

/// Where clients connect through an endpoint Service as the cluster holds it: the first address the
/// cloud provider's load balancer published in `status.loadBalancer.ingress` (an `ip` or a `hostname`,
/// core/v1 `LoadBalancerIngress`) and the Service's port. `None` until one is published.
pub fn published_endpoint(service: &Value) -> Option<(String, u16)> {
    let ingress = service["status"]["loadBalancer"]["ingress"].as_array()?.first()?;
    let host = ingress["ip"].as_str().or_else(|| ingress["hostname"].as_str())?;
    let port = service["spec"]["ports"][0]["port"].as_u64()?;
    Some((host.to_owned(), u16::try_from(port).ok()?))
}

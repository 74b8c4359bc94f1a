//! `ManagedInstance`: an instance's desired state mirrored into its cluster, so operators see instances
//! with `kubectl get managedinstances` and a kube-runtime controller can reconcile them like any other
//! resource.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the control plane's custom resources.
pub const GROUP: &str = "cp.example.com";
/// Field manager of everything the agent applies.
pub const MANAGER: &str = "cluster-agent.cp.example.com";
/// Finalizer that keeps a ManagedInstance until its workloads are gone.
pub const FINALIZER: &str = "cp.example.com/cleanup";

/// Desired state of one managed-service instance, as the control plane decided it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cp.example.com",
    version = "v1alpha1",
    kind = "ManagedInstance",
    namespaced,
    status = "ManagedInstanceStatus",
    shortname = "mi",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedInstanceSpec {
    /// control-plane instance id
    pub instance_id: String,
    /// project
    pub project: String,
    /// service type: postgresql, mongodb, influxdb, grafana
    pub service: String,
    /// service version
    pub version: String,
    /// plan name
    pub plan: String,
    /// CPU per replica, millicores
    pub cpu_millis: u32,
    /// memory per replica, MiB
    pub memory_mib: u32,
    /// replicas
    pub replicas: u32,
    /// storage per replica, GiB
    pub storage_gib: u32,
    /// service configuration
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// the instance version this spec corresponds to (the desired generation)
    pub generation: u64,
}

/// A condition in the Kubernetes convention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// condition type, e.g. Ready
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown
    pub status: String,
    /// CamelCase reason
    pub reason: String,
    /// human-readable detail
    #[serde(default)]
    pub message: String,
    /// when status last changed (RFC 3339)
    pub last_transition_time: String,
    /// the metadata.generation it describes
    #[serde(default)]
    pub observed_generation: i64,
}

/// What the agent observed of the instance's workloads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedInstanceStatus {
    /// the desired generation fully applied and ready
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// Progressing, Ready or Failed
    #[serde(default)]
    pub phase: String,
    /// replicas ready
    #[serde(default)]
    pub ready_replicas: u32,
    /// version running
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// hash of the configuration applied
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// failure reason
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// conditions: Ready
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

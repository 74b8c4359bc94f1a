//! Status: desired compared with what the cluster's agent observed, per aspect, with conditions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Health of an instance or of one of its aspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// desired equals observed
    Healthy,
    /// desired differs from observed; being applied
    Reconciling,
    /// the cluster reports a failure; see `reason`
    Error,
    /// the instance's cluster is not heard from (no heartbeat from its agent for longer than the control
    /// plane's silence); `reason` says since when. It returns by itself when the heartbeats do
    Unknown,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    /// Ready, VersionApplied, ResourcesApplied, ConfigurationApplied or Deleted
    #[serde(rename = "type")]
    pub condition_type: String,
    /// True, False or Unknown
    pub status: String,
    /// CamelCase reason
    pub reason: String,
    /// detail
    pub message: String,
    /// when `status` last changed
    pub last_transition_time: DateTime<Utc>,
    /// desired generation described
    pub observed_generation: u64,
}

/// Desired compared with observed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    /// overall: error if the cluster reports a failure, reconciling if any aspect is, else healthy
    pub state: Health,
    /// per aspect: version, resources, configuration, network_access (and deletion while deprovisioning)
    pub aspects: BTreeMap<String, Health>,
    /// failure reason reported by the cluster
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// configuration parameters (the catalog's `restart` ones) changed but waiting for the service's
    /// restart to apply; empty once the cluster has applied the configuration
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Ready plus one condition per aspect
    pub conditions: Vec<Condition>,
}

/// Objects of the instance that were changed or deleted in its cluster outside the control plane, and
/// that the agent put back (a hand-edited StatefulSet, a deleted ManagedInstance).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Drift {
    /// when the agent reported it
    pub at: DateTime<Utc>,
    /// the objects, as `Kind/name`
    pub objects: Vec<String>,
}

/// What the cluster's agent last reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Observed {
    /// progressing, ready or failed
    pub phase: String,
    /// desired generation fully applied and ready
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// replicas ready
    pub ready_replicas: u32,
    /// replicas desired
    pub desired_replicas: u32,
    /// service version running
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// hash of the configuration applied
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// the configuration applied (the one `config_hash` describes)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    /// failure reason
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// the source blocks the cluster admits (its NetworkPolicy), sorted
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<String>>,
    /// when the agent reported it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

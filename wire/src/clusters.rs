//! Clusters, as operators register them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `PUT /v1/admin/clusters/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRequest {
    /// region of the cluster
    #[schema(example = "eu-central")]
    pub region: String,
}

/// A registered cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// name
    pub name: String,
    /// region
    pub region: String,
}

/// Whether a cluster's agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// its agent's heartbeats arrive
    Reachable,
    /// no heartbeat for longer than the control plane's silence: its instances show `unknown`
    Unreachable,
    /// no heartbeat ever (no agent started yet)
    NeverSeen,
}

/// What a cluster's agent last said of itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentReport {
    /// which replica beat last (its pod's name)
    pub agent: String,
    /// its version
    pub version: String,
    /// messages of its feed not yet delivered to it
    pub lag: u64,
    /// when it last finished reconciling an instance
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile: Option<chrono::DateTime<chrono::Utc>>,
    /// when its last heartbeat arrived
    pub last_heartbeat: chrono::DateTime<chrono::Utc>,
}

/// A registered cluster as the fleet's operators see it (`GET /v1/admin/clusters`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// name
    pub name: String,
    /// region
    pub region: String,
    /// whether its agent is heard from
    pub state: ClusterState,
    /// since when (absent while never seen)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// what its agent last said (absent while never seen)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
    /// instances placed on it, deprovisioned ones excepted
    pub instances: usize,
    /// no new instance is placed on it (`POST …/cordon`; a drain cordons too)
    #[serde(default)]
    pub cordoned: bool,
    /// while its instances are moved off it (`POST …/drain`): how many move at once
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<u32>,
    /// of its instances, those moving to another cluster now
    #[serde(default)]
    pub migrating: usize,
}

/// A drain: move every instance of a cluster to other clusters of its region.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// how many instances move at once (1 to 16; 1 when absent)
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub parallel: Option<u32>,
}

/// A move of one instance to another cluster of its region.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// the cluster to move to: registered, of the instance's region, not cordoned
    pub cluster: String,
}

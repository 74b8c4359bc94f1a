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

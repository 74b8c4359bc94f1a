//! Operator endpoints: cluster registration.

use axum::{
    Json,
    extract::{Path, State},
};
use domain::instance::check_dns_label;

use crate::{
    ApiError, AppState,
    dto::{Cluster, ClusterRequest},
    error::Problem,
    extract::JsonBody,
};

/// Lists registered clusters, sorted by name.
#[utoipa::path(get, path = "/v1/admin/clusters", tag = "admin", responses((status = 200, body = Vec<Cluster>)))]
pub(super) async fn list_clusters(State(state): State<AppState>) -> Json<Vec<Cluster>> {
    Json(state.clusters.list().into_iter().map(|c| Cluster { name: c.name, region: c.region }).collect())
}

/// Registers a cluster (or changes its region). New instances may be placed on it at once.
#[utoipa::path(
    put,
    path = "/v1/admin/clusters/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "cluster name, a DNS-1123 label")),
    request_body = ClusterRequest,
    responses(
        (status = 200, body = Cluster),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn register_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: JsonBody<ClusterRequest>,
) -> Result<Json<Cluster>, ApiError> {
    check_dns_label("name", &name)?;
    check_dns_label("region", &body.value.region)?;
    let cluster = domain::Cluster { name, region: body.value.region };
    state.clusters.register(&cluster).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(Cluster { name: cluster.name, region: cluster.region }))
}

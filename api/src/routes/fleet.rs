//! Fleet operations: cordoning a cluster (no new placements), draining it (every instance moved to
//! another cluster of its region, `projections::migrations`), and moving one instance
//! (`domain::instance::migration`). Platform admins only (`auth::routes`).

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, Uri},
    response::Response,
};
use domain::{InstanceCommand, OperationKind, instance::check_dns_label};
use streams::clusters::{Drain, FleetState};
use uuid::Uuid;

use super::{instances::instance_id, write};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{ClusterStatus, DrainRequest, MigrateRequest, Operation},
    error::Problem,
    extract::JsonBody,
};

/// Most instances a drain moves at once.
const MAX_DRAIN_PARALLEL: u32 = 16;

async fn set(state: &AppState, name: &str, fleet: FleetState) -> Result<Json<ClusterStatus>, ApiError> {
    check_dns_label("name", name)?;
    let set = state
        .clusters
        .set_fleet_state(name, fleet)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if set.is_none() {
        return Err(ApiError::NotFound("cluster"));
    }
    let status = super::admin::cluster_statuses(state).into_iter().find(|c| c.name == name);
    status.map(Json).ok_or(ApiError::NotFound("cluster"))
}

/// Cordons a cluster: no new instance is placed on it (placement picks another cluster of the region; a
/// provision naming it is refused); its instances stay.
#[utoipa::path(
    post,
    path = "/v1/admin/clusters/{name}/cordon",
    tag = "admin",
    params(("name" = String, Path, description = "cluster name")),
    responses((status = 200, body = ClusterStatus), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
pub(super) async fn cordon(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let drain = state.clusters.fleet_state(&name).drain;
    set(&state, &name, FleetState { cordoned: true, drain }).await
}

/// Uncordons a cluster: it takes new instances again, and a drain of it stops starting moves (those under
/// way finish).
#[utoipa::path(
    post,
    path = "/v1/admin/clusters/{name}/uncordon",
    tag = "admin",
    params(("name" = String, Path, description = "cluster name")),
    responses((status = 200, body = ClusterStatus), (status = 404, body = Problem, content_type = "application/problem+json"))
)]
pub(super) async fn uncordon(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ClusterStatus>, ApiError> {
    set(&state, &name, FleetState::default()).await
}

/// Drains a cluster: cordons it and moves every instance on it to another cluster of its region, from a
/// fresh backup of each, `parallel` at a time. Each move shows in its instance's history with the asker.
#[utoipa::path(
    post,
    path = "/v1/admin/clusters/{name}/drain",
    tag = "admin",
    params(("name" = String, Path, description = "cluster name")),
    request_body = DrainRequest,
    responses(
        (status = 200, body = ClusterStatus),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn drain(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: JsonBody<DrainRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let parallel = body.value.parallel.unwrap_or(1);
    if !(1..=MAX_DRAIN_PARALLEL).contains(&parallel) {
        return Err(ApiError::field(
            "/parallel",
            "drain_parallel",
            format!("{parallel} is out of range: between 1 and {MAX_DRAIN_PARALLEL} instances move at once"),
        ));
    }
    let drain = Drain { parallel, actor: principal.actor() };
    set(&state, &name, FleetState { cordoned: true, drain: Some(drain) }).await
}

/// Moves an instance to another cluster of its region: a fresh backup, a copy restored from it on the
/// target, then the switch once the copy serves; the copy on the source goes after. It keeps its id and
/// name, serves where it is until the switch, and stays there if the move fails.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/migrate",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the move is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = MigrateRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the instance is being deprovisioned or already moving", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn migrate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<MigrateRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let to = body.value.cluster;
    let region = {
        let model = state.read_models.read();
        let view = model.instance(&project, id).ok_or(ApiError::NotFound("instance"))?;
        let from = view.spec().cluster.clone();
        state.clusters.list().into_iter().find(|c| c.name == from).map(|c| c.region)
    };
    let target = state.clusters.placeable().into_iter().find(|c| c.name == to);
    match (target, region) {
        (None, _) if state.clusters.list().iter().any(|c| c.name == to) => {
            return Err(ApiError::field(
                "/cluster",
                "cluster_not_cordoned",
                format!("cluster {to:?} is cordoned: it takes no instances"),
            ));
        }
        (None, _) => {
            return Err(ApiError::field(
                "/cluster",
                "registered_cluster",
                format!("no cluster {to:?} is registered"),
            ));
        }
        (Some(target), Some(region)) if target.region != region => {
            return Err(ApiError::field(
                "/cluster",
                "same_region",
                format!("cluster {to:?} is in {}, the instance's region is {region}", target.region),
            ));
        }
        _ => {}
    }
    let command =
        InstanceCommand::StartMigration { migration_id: Uuid::now_v7(), to, backup_id: Uuid::now_v7() };
    write::action(&state, &principal, &project, id, uri.path(), &headers, OperationKind::Migrate, command)
        .await
}

/// Cancels the move in progress: the copy on the target (if placed) is removed and the instance keeps
/// serving where it was.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}/migration",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the cancellation is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "no move is in progress", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cancel_migration(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let current = state.commands.read_current(&project, id).await?.ok_or(ApiError::NotFound("instance"))?;
    let Some(migration) = current.aggregate.migration() else {
        return Err(ApiError::Conflict {
            code: "no_migration",
            detail: "the instance is not moving to another cluster".into(),
            errors: vec![],
            retry_after: None,
        });
    };
    let reason = format!("cancelled by {}", principal.actor());
    let command = InstanceCommand::FailMigration { migration_id: migration.id, reason };
    write::action(&state, &principal, &project, id, uri.path(), &headers, OperationKind::Migrate, command)
        .await
}

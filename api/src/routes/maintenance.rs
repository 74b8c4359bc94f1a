//! Maintenance: applying now what an instance holds for its maintenance window. The window itself is a
//! field of the instance (set at provision, changed by PATCH); what is held shows as its
//! `pending_maintenance`.

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, Uri},
    response::Response,
};
use domain::{InstanceCommand, OperationKind, instance::check_dns_label};

use super::{instances::instance_id, write};
use crate::{ApiError, AppState, auth::Principal, dto::Operation, error::Problem};

/// Applies what the instance holds for its maintenance window now (restart-mode configuration changes:
/// the service restarts). With nothing held, the operation has already succeeded and nothing is stored.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/maintenance/apply",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the application is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the instance is being deprovisioned", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn apply_maintenance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let command = InstanceCommand::ApplyMaintenance {
        trigger: domain::instance::maintenance::MaintenanceTrigger::Customer,
    };
    write::action(
        &state,
        &principal,
        &project,
        id,
        uri.path(),
        &headers,
        OperationKind::ApplyMaintenance,
        command,
    )
    .await
}

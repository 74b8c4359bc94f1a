//! Backup schedules: part of an instance's desired state, so every change is an instance command guarded
//! by the instance's ETag, like the ACL. The control plane's scheduler asks for the backups.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, instance::check_dns_label};
use projections::OperationKind;
use uuid::Uuid;

use super::{
    instances::{current_instance, instance_id},
    write,
};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{BackupSchedule, BackupScheduleList, BackupScheduleRequest, Operation},
    error::Problem,
    extract::{JsonBody, etag},
};

fn schedule_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("backup schedule"))
}

/// Lists an instance's backup schedules.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/backup-schedules",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id")),
    responses(
        (status = 200, body = BackupScheduleList, headers(("ETag" = String, description = "instance version"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_schedules(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, current) = current_instance(&state, &project, &id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    let list = BackupScheduleList { items: spec.backup_schedules.iter().map(BackupSchedule::from).collect() };
    Ok(([(header::ETAG, etag(current.version))], Json(list)).into_response())
}

/// Gets one backup schedule.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        ("schedule_id" = String, Path, description = "schedule id")),
    responses(
        (status = 200, body = BackupSchedule, headers(("ETag" = String, description = "instance version"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_schedule(
    State(state): State<AppState>,
    Path((project, id, schedule)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (_, current) = current_instance(&state, &project, &id).await?;
    let schedule = schedule_id(&schedule)?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    let found = spec
        .backup_schedules
        .iter()
        .find(|s| s.id == schedule)
        .ok_or(ApiError::NotFound("backup schedule"))?;
    Ok(([(header::ETAG, etag(current.version))], Json(BackupSchedule::from(found))).into_response())
}

/// Adds a backup schedule.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/backup-schedules",
    tag = "backups",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = BackupScheduleRequest,
    responses(
        (status = 202, description = "accepted; `Location` is the operation's, `Cp-Schedule-Location` the new schedule's",
            body = Operation,
            headers(("Location" = String), ("Cp-Schedule-Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field breaks a rule: cron, time zone, retention, a name in use, too many schedules",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<BackupScheduleRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let instance = instance_id(&id)?;
    // A retry with the same Idempotency-Key answers the first operation, so a fresh id is safe here.
    let schedule = Uuid::now_v7();
    let command = InstanceCommand::PutBackupSchedule(body.value.clone().into_schedule(schedule));
    let fingerprint = [Method::POST.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    let mut response = write::change(
        &state,
        &principal,
        &project,
        instance,
        &headers,
        OperationKind::Update,
        fingerprint,
        command,
    )
    .await?;
    if response.status().is_success()
        && let Ok(location) =
            format!("/v1/projects/{project}/instances/{instance}/backup-schedules/{schedule}").parse()
    {
        response.headers_mut().insert("cp-schedule-location", location);
    }
    Ok(response)
}

/// Replaces a backup schedule.
#[utoipa::path(
    put,
    path = "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}",
    tag = "backups",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("schedule_id" = String, Path, description = "schedule id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = BackupScheduleRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn replace_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, schedule)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<BackupScheduleRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let instance = instance_id(&id)?;
    let schedule = schedule_id(&schedule)?;
    // Only an existing schedule is replaced here; new ones are POSTed.
    let (_, current) = current_instance(&state, &project, &id).await?;
    let exists =
        current.aggregate.spec().is_some_and(|s| s.backup_schedules.iter().any(|s| s.id == schedule));
    if !exists {
        return Err(ApiError::NotFound("backup schedule"));
    }
    let command = InstanceCommand::PutBackupSchedule(body.value.clone().into_schedule(schedule));
    let fingerprint = [Method::PUT.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    write::change(
        &state,
        &principal,
        &project,
        instance,
        &headers,
        OperationKind::Update,
        fingerprint,
        command,
    )
    .await
}

/// Removes a backup schedule (its backups stay, and are no longer expired by it).
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}/backup-schedules/{schedule_id}",
    tag = "backups",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("schedule_id" = String, Path, description = "schedule id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, schedule)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let instance = instance_id(&id)?;
    let schedule = schedule_id(&schedule)?;
    let fingerprint = [Method::DELETE.as_str().as_bytes(), uri.path().as_bytes(), b"".as_slice()];
    let command = InstanceCommand::RemoveBackupSchedule { id: schedule };
    write::change(
        &state,
        &principal,
        &project,
        instance,
        &headers,
        OperationKind::Update,
        fingerprint,
        command,
    )
    .await
}

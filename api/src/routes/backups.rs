//! Backups of an instance: asked for here, made by the instance's cluster, listed from the read models.
//! Each backup is its own aggregate (`domain::Backup`); the operation that asks for one has the
//! backup's id and is done when the backup is.

use crate::dto::Convert;
use crate::dto::OperationType;
use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{BackupCommand, BackupError, BackupSource, BackupTrigger, backup::InstanceFacts};
use projections::OperationKind;
use serde::Deserialize;
use streams::{
    CommandMetadata, ExecuteError,
    idempotency::{Claim, IdempotencyRecord, digest},
};
use utoipa::IntoParams;
use uuid::Uuid;

use super::instances::{current_instance, instance_id};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{Backup, BackupList, BackupState, Operation, OperationStatus},
    error::Problem,
};

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let conflict =
            |code| Self::Conflict { code, detail: e.to_string(), errors: vec![], retry_after: None };
        match e {
            BackupError::InstanceNotReady => conflict("instance_not_ready"),
            BackupError::InstanceDeprovisioning => conflict("instance_deprovisioning"),
            BackupError::AlreadyExists => conflict("backup_exists"),
            BackupError::InstanceNotFound => Self::NotFound("instance"),
            BackupError::NotFound => Self::NotFound("backup"),
            BackupError::StillRunning => Self::Conflict {
                code: "backup_running",
                detail: e.to_string(),
                errors: vec![],
                retry_after: Some(5),
            },
        }
    }
}

fn store_error(e: ExecuteError<BackupError>) -> ApiError {
    match e {
        ExecuteError::Rejected(e) => e.into(),
        ExecuteError::Unavailable(why) => ApiError::Unavailable(format!(
            "event store unavailable ({why}); the backup may or may not have been asked for: list the \
             instance's backups before retrying"
        )),
        ExecuteError::Corrupt(why) => ApiError::Internal(why),
        ExecuteError::VersionMismatch { .. } | ExecuteError::Conflict => ApiError::Conflict {
            code: "concurrent_modification",
            detail: "the backup was changed concurrently; retry".into(),
            errors: vec![],
            retry_after: Some(1),
        },
    }
}

/// Backs an instance up now.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/backups",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "makes retries safe: the same key answers with the first request's backup")),
    responses(
        (status = 202, description = "accepted; the operation's id is the backup's", body = Operation,
            headers(("Location" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the instance was never ready yet, or is being deprovisioned",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the Idempotency-Key was used for another request",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_backup(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (instance_id, current) = current_instance(&state, &project, &id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    // Whether the cluster ever reported the instance ready: the read models know, the aggregate does not.
    let ever_ready = state
        .read_models
        .read()
        .instance(&project, instance_id)
        .and_then(|view| view.observed.as_ref())
        .is_some_and(|observed| observed.observed_generation.is_some());
    let mut backup_id = Uuid::now_v7();
    let mut created_at = chrono::Utc::now();
    // With an Idempotency-Key, a retry asks for the first request's backup again: the backup aggregate
    // takes the same request under the same id as a no-op, so nothing is backed up twice.
    let claimed = match crate::extract::idempotency_key(&headers)? {
        None => None,
        Some(key) => {
            let record = IdempotencyRecord {
                fingerprint: digest(&[Method::POST.as_str().as_bytes(), uri.path().as_bytes(), b""]),
                operation_id: backup_id,
                instance_id,
                created_at,
            };
            let (bucket_key, claim) = super::write::claim_key(&state, &project, &key, &record).await?;
            match claim {
                Claim::Fresh => Some((bucket_key, record)),
                Claim::Replay(first) => {
                    backup_id = first.operation_id;
                    created_at = first.created_at;
                    None
                }
                Claim::Mismatch(_) => return Err(crate::routes::write::key_reused()),
            }
        }
    };
    let command = BackupCommand::Request {
        source: BackupSource::of(spec),
        trigger: BackupTrigger::Manual,
        instance: InstanceFacts { lifecycle: current.aggregate.lifecycle(), ever_ready },
    };
    // The operation is the backup: its id is the backup's.
    let mut metadata = CommandMetadata::new(OperationKind::Backup, principal.actor());
    metadata.command_id = backup_id;
    metadata.time = created_at;
    metadata.idempotency_key = claimed.as_ref().map(|(key, _)| key.clone());
    let result = state.backups.execute(&project, instance_id, backup_id, command, metadata).await;
    if let Err(e) = result {
        // A refusal is final, so a retry with the same key is judged again.
        if let (false, Some((key, record))) = (matches!(e, ExecuteError::Unavailable(_)), &claimed)
            && let Err(forget) = state.idempotency.forget(key, record).await
        {
            tracing::warn!(error = %forget, "idempotency key of a refused backup not forgotten");
        }
        return Err(store_error(e));
    }
    Ok(accepted(&project, backup_id, instance_id, backup_id, OperationKind::Backup, created_at))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupListParams {
    /// page size, 1 to 500 (default 100)
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_page_token` of the previous page
    #[param(format = Uuid)]
    page_token: Option<String>,
    /// only backups in this state
    #[param(value_type = Option<BackupState>)]
    state: Option<BackupState>,
}

/// Lists an instance's backups, newest first; they stay listed after the instance is deprovisioned.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/backups",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        BackupListParams),
    responses(
        (status = 200, body = BackupList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_backups(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
    query: Result<Query<BackupListParams>, QueryRejection>,
) -> Result<Json<BackupList>, ApiError> {
    let (instance_id, _) = current_instance(&state, &project, &id).await?;
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        detail: e.body_text(),
        errors: vec![],
    })?;
    let (limit, after) = crate::extract::page(params.limit, params.page_token.as_deref())?;
    let model = state.read_models.read();
    let mut page = model.backups().of_instance(
        &project,
        instance_id,
        params.state.map(Convert::convert),
        after,
        limit + 1,
    );
    let next_page_token = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|v| v.id.to_string()).unwrap_or_default()
    });
    Ok(Json(BackupList { items: page.into_iter().map(Backup::convert).collect(), next_page_token }))
}

/// Gets one backup.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/backups/{backup_id}",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        ("backup_id" = String, Path, description = "backup id")),
    responses(
        (status = 200, body = Backup),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_backup(
    State(state): State<AppState>,
    Path((project, id, backup_id)): Path<(String, String, String)>,
) -> Result<Json<Backup>, ApiError> {
    let instance = instance_id(&id)?;
    let backup_id: Uuid = backup_id.parse().map_err(|_| ApiError::NotFound("backup"))?;
    domain::instance::check_dns_label("project", &project)?;
    let model = state.read_models.read();
    let view = model
        .backups()
        .get(&project, backup_id)
        .filter(|view| view.source.instance_id == instance)
        .ok_or(ApiError::NotFound("backup"))?;
    Ok(Json(Backup::convert(view)))
}

/// Deletes a backup's object from the store. The record stays, marked deleted; the operation succeeds
/// once the object is gone.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}/backups/{backup_id}",
    tag = "backups",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        ("backup_id" = String, Path, description = "backup id")),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the backup is still being made", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_backup(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, backup_id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let instance = instance_id(&id)?;
    domain::instance::check_dns_label("project", &project)?;
    let backup_id: Uuid = backup_id.parse().map_err(|_| ApiError::NotFound("backup"))?;
    let ended = {
        let model = state.read_models.read();
        let view = model
            .backups()
            .get(&project, backup_id)
            .filter(|view| view.source.instance_id == instance)
            .ok_or(ApiError::NotFound("backup"))?;
        view.finished_at.is_some()
    };
    let metadata = CommandMetadata::new(OperationKind::DeleteBackup, principal.actor());
    let (operation_id, created_at) = (metadata.command_id, metadata.time);
    let committed = state
        .backups
        .execute(&project, instance, backup_id, BackupCommand::Delete { ended }, metadata)
        .await
        .map_err(store_error)?;
    if committed.events.is_empty() {
        // Asked before: that deletion's operation answers.
        let existing =
            state.read_models.read().backups().get(&project, backup_id).and_then(|v| v.deletion_operation);
        if let Some(existing) = existing {
            return Ok(accepted(
                &project,
                existing,
                instance,
                backup_id,
                OperationKind::DeleteBackup,
                created_at,
            ));
        }
    }
    Ok(accepted(&project, operation_id, instance, backup_id, OperationKind::DeleteBackup, created_at))
}

fn accepted(
    project: &str,
    id: Uuid,
    instance_id: Uuid,
    backup_id: Uuid,
    kind: OperationKind,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Response {
    let operation = Operation {
        id,
        operation_type: OperationType::convert(kind),
        state: OperationStatus::InProgress,
        instance_id,
        instance_version: 0,
        backup_id: Some(backup_id),
        created_at,
        error: None,
    };
    let mut response = (StatusCode::ACCEPTED, Json(operation)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/projects/{project}/operations/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

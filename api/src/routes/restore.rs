//! Restores: in place (`POST …/instances/{id}/restore`, an instance command) and the sources a new
//! instance may start from (a provision's `restore_from`: a backup, or for PostgreSQL a fork at a point in
//! time). Both are checked by the domain against what the read models know of the backups.

use axum::{
    Extension,
    extract::{Path, State},
    response::Response,
};
use projections::OperationKind;
use uuid::Uuid;

use super::instances::instance_id;
use crate::{ApiError, AppState, auth::Principal, dto::Operation, error::Problem};

/// What the read models know of backup `backup_id` of `project`, for a restore's rules. A backup of
/// another project is not found. `field` names the request field for the errors.
pub(super) fn restore_source(
    state: &AppState,
    project: &str,
    backup_id: Uuid,
    field: &str,
) -> Result<domain::instance::restore::RestoreSource, ApiError> {
    state.read_models.read().backups().restore_source(project, backup_id).ok_or_else(|| {
        ApiError::field(field, "existing_backup", format!("the project has no backup {backup_id}"))
    })
}

/// What a provision's `restore_from` names, for the restore's rules: a backup, or a fork's source and
/// point in time.
pub(super) fn start_from(
    state: &AppState,
    project: &str,
    from: &crate::dto::RestoreFrom,
) -> Result<domain::instance::restore::RestoreSource, ApiError> {
    match (from.backup_id, from.instance_id, from.point_in_time) {
        (Some(backup_id), None, None) => restore_source(state, project, backup_id, "/restore_from/backup_id"),
        (None, Some(instance_id), Some(at)) => fork_source(state, project, instance_id, at),
        _ => Err(ApiError::field(
            "/restore_from",
            "one_source",
            "name either backup_id, or instance_id with point_in_time",
        )),
    }
}

/// How long WAL may wait on the source before it is archived: CloudNativePG's `archive_timeout` (v1.30.0
/// `pkg/postgres/configuration.go`, `CnpgConfigurationSettings.GlobalDefaultSettings`: 5 min; the catalog
/// does not offer the parameter, so no instance changes it). A segment is archived once full or once this
/// has passed, so with archiving working every moment older than this is in the store.
pub(super) const ARCHIVE_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A fork of `instance_id` at `at`: the newest completed base backup taken before `at` (the oldest, when
/// `at` is before every one: the rules then refuse it, stating the window) and the source's recoverable
/// window, the moments whose WAL Barman can reach. It opens when the oldest kept base backup ended
/// (Barman's first recoverability point) and ends at the later of the newest base backup's end (a base
/// backup ends once `pg_backup_stop` has waited for its WAL to be archived: PostgreSQL 15 docs,
/// "Making a Base Backup Using the Low Level API") and [`ARCHIVE_TIMEOUT`] before now (or before the
/// instance's removal). The plugin reports no last archived WAL (plugin-barman-cloud v0.14.0
/// `api/v1/objectstore_types.go`, `RecoveryWindow`: first recoverability point and backup times only; the
/// instance manager's `lastArchivedWALTime`, cloudnative-pg v1.30.0 `pkg/postgres/status.go`, is not in any
/// Kubernetes object), so a moment after both is refused here rather than failing the fork's bootstrap.
fn fork_source(
    state: &AppState,
    project: &str,
    instance_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<domain::instance::restore::RestoreSource, ApiError> {
    let model = state.read_models.read();
    let source = model.instance(project, instance_id).ok_or_else(|| {
        ApiError::field(
            "/restore_from/instance_id",
            "existing_instance",
            format!("the project has no instance {instance_id}"),
        )
    })?;
    let spec = source.spec();
    let mut bases: Vec<&projections::BackupView> = model
        .backups()
        .of_instance(project, instance_id, Some(projections::BackupState::Completed), None, usize::MAX)
        .into_iter()
        .filter(|b| b.verified != Some(false) && b.finished_at.is_some())
        // Only base backups of the major it runs now: an older major's cannot start a fork of this one and
        // its WAL is archived under another server name (`domain::instance::archive_server_after_upgrade`).
        .filter(|b| major(&b.source.version) == major(&spec.version))
        .collect();
    bases.sort_by_key(|b| b.finished_at);
    let running_until =
        if source.removed { source.observed_at.unwrap_or_else(chrono::Utc::now) } else { chrono::Utc::now() };
    let newest_end = bases.last().and_then(|b| b.finished_at);
    let end = newest_end.map(|newest| newest.max(running_until - ARCHIVE_TIMEOUT));
    let window = bases.first().and_then(|b| b.finished_at).zip(end);
    let base = bases.iter().rev().find(|b| b.finished_at.is_some_and(|t| t <= at)).or(bases.first());
    Ok(domain::instance::restore::RestoreSource {
        backup_id: base.map_or(Uuid::nil(), |b| b.id),
        instance_id,
        service: spec.service,
        version: spec.version.clone(),
        location: base.and_then(|b| b.location.clone()),
        unusable: None,
        point_in_time: Some(domain::instance::restore::PointInTime { at, window }),
    })
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// Restores an instance in place from a backup: the backup's data replaces the instance's; its id, name
/// and endpoint stay. The operation succeeds once the cluster has loaded it; the instance shows the
/// `restore` aspect reconciling until then.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/restore",
    tag = "backups",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the restore is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = crate::dto::RestoreRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the backup failed, was deleted, or has not completed; or the instance is being deprovisioned",
            body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "no such backup in the project, another service's, a newer version's, or (PostgreSQL) another major's",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn restore_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: crate::extract::JsonBody<crate::dto::RestoreRequest>,
) -> Result<Response, ApiError> {
    domain::instance::check_dns_label("project", &project)?;
    let instance = instance_id(&id)?;
    let source = restore_source(&state, &project, body.value.backup_id, "/backup_id")?;
    let fingerprint = [axum::http::Method::POST.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    let command = domain::InstanceCommand::Restore(source);
    super::write::change(
        &state,
        &principal,
        &project,
        instance,
        &headers,
        OperationKind::Restore,
        fingerprint,
        command,
    )
    .await
}

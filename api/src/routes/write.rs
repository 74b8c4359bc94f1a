//! The write path every mutating endpoint shares: Idempotency-Key, command execution and the 202 +
//! operation response; and the waits reads use to see writes.
//!
//! A write never waits for the read models: they are written by another process (the projector), and a
//! projector outage must not hold up writes. The response carries the write's stream sequence; reads that
//! carry it back wait until the read models include it.

use crate::dto::Convert;
use crate::dto::OperationType;
use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use domain::InstanceCommand;
use projections::OperationKind;
use streams::{
    CommandMetadata, ExecuteError,
    idempotency::{Claim, IdempotencyKeys, IdempotencyRecord, digest},
};
use uuid::Uuid;

use crate::{
    ApiError, AppState,
    dto::{Operation, OperationStatus},
    error::FieldError,
    extract::{self, etag},
};

/// Header carrying the stream sequence of a write's events (a read-your-writes token).
pub(super) const STREAM_SEQUENCE: &str = "cp-stream-sequence";

/// Waits until the read models include the `Cp-Min-Sequence` a read carries, if any.
pub(super) async fn read_your_writes(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(sequence) = extract::min_sequence(headers)? else { return Ok(()) };
    if state.read_models.applied() >= sequence {
        return Ok(());
    }
    // A sequence beyond the end of the stream is no token a write returned (every acknowledged write is
    // in the stream): refuse it at once rather than wait for what cannot come.
    let last = stream_end(state).await?;
    if sequence > last {
        return Err(ApiError::Conflict {
            code: "sequence_ahead_of_stream",
            detail: format!(
                "Cp-Min-Sequence: {sequence} is beyond the end of the event stream ({last}); no write returned it \
                 here (a token from another deployment, or a stream restored from an older backup?)"
            ),
            errors: vec![FieldError {
                field: "Cp-Min-Sequence".into(),
                rule: "written_sequence".into(),
                detail: format!("at most the stream's last sequence, {last}"),
            }],
            retry_after: None,
        });
    }
    wait_for(state, sequence, "asked for in Cp-Min-Sequence").await
}

async fn stream_end(state: &AppState) -> Result<u64, ApiError> {
    let mut events = state.events.clone();
    Ok(events
        .info()
        .await
        .map_err(|e| ApiError::Unavailable(format!("event stream unavailable: {e}")))?
        .state
        .last_sequence)
}

/// Waits until the read models include everything the stream holds now. A read runs this before it
/// answers 404, so a client that just wrote (without passing the token back) is never told that what it
/// created does not exist.
pub(crate) async fn catch_up(state: &AppState) -> Result<(), ApiError> {
    let last = stream_end(state).await?;
    wait_for(state, last, "at the end of the event stream").await
}

async fn wait_for(state: &AppState, sequence: u64, what: &str) -> Result<(), ApiError> {
    if state.read_models.wait_for(sequence, state.read_wait).await {
        return Ok(());
    }
    Err(ApiError::Unavailable(format!(
        "the read models include stream sequence {} but not {sequence} {what} after {:?}; the projector is \
         behind or down; retry",
        state.read_models.applied(),
        state.read_wait
    )))
}

/// One write request.
pub(crate) struct Write<'a> {
    pub(crate) project: &'a str,
    pub(crate) kind: OperationKind,
    /// the instance addressed; fresh for provisions
    pub(crate) instance_id: Uuid,
    pub(crate) expected_version: Option<u64>,
    pub(crate) headers: &'a HeaderMap,
    /// method, path and body: what an Idempotency-Key is bound to
    pub(crate) fingerprint: [&'a [u8]; 3],
    /// who asked (recorded in the events)
    pub(crate) actor: &'a crate::auth::Principal,
}

/// A body-less `POST` action on an instance (rotate its credentials, apply its maintenance): the request
/// is fingerprinted by method and path alone, then written as [`change`] writes any update.
#[allow(clippy::too_many_arguments)]
pub(super) async fn action(
    state: &AppState,
    principal: &crate::auth::Principal,
    project: &str,
    instance_id: Uuid,
    path: &str,
    headers: &HeaderMap,
    kind: OperationKind,
    command: InstanceCommand,
) -> Result<Response, ApiError> {
    let fingerprint = [axum::http::Method::POST.as_str().as_bytes(), path.as_bytes(), b"".as_slice()];
    change(state, principal, project, instance_id, headers, kind, fingerprint, command).await
}

/// Runs `command` on an existing instance, guarded by its ETag (`If-Match`), as an operation of `kind`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn change(
    state: &AppState,
    principal: &crate::auth::Principal,
    project: &str,
    instance_id: Uuid,
    headers: &axum::http::HeaderMap,
    kind: OperationKind,
    fingerprint: [&[u8]; 3],
    command: InstanceCommand,
) -> Result<Response, ApiError> {
    let write = Write {
        project,
        kind,
        instance_id,
        expected_version: extract::if_match(headers)?,
        headers,
        fingerprint,
        actor: principal,
    };
    execute(state, write, command).await
}

/// Claims the client's Idempotency-Key `key` of `project` for `record`; the bucket key and the outcome.
pub(super) async fn claim_key(
    state: &AppState,
    project: &str,
    key: &str,
    record: &IdempotencyRecord,
) -> Result<(String, Claim), ApiError> {
    let bucket_key = IdempotencyKeys::key(project, key);
    let claim = state
        .idempotency
        .claim(&bucket_key, record)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((bucket_key, claim))
}

/// The refusal of an Idempotency-Key that was used for another request.
pub(super) fn key_reused() -> ApiError {
    ApiError::Unprocessable {
        code: "idempotency_key_reused",
        detail: "this Idempotency-Key was already used for a different request".into(),
        errors: vec![FieldError {
            field: "Idempotency-Key".into(),
            rule: "same_request".into(),
            detail: "a key may only be reused with the same method, path and body".into(),
        }],
    }
}

/// Runs `command` as `write` describes and answers 202 with the operation.
pub(super) async fn execute(
    state: &AppState,
    write: Write<'_>,
    command: InstanceCommand,
) -> Result<Response, ApiError> {
    let project = write.project;
    let written = run(state, write, command).await?;
    Ok(accepted(project, written.operation, written.version, written.sequence))
}

/// What a write did, for an edge that answers in its own form (the OSB facade, `crate::osb`).
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// the operation: this request's, or the first one's when its Idempotency-Key was replayed or the
    /// instance was already deprovisioning; `succeeded` when the command changed nothing
    pub(crate) operation: Operation,
    /// the instance version it produced (or found)
    pub(crate) version: u64,
    /// the stream sequence of its events, when known
    pub(crate) sequence: Option<u64>,
}

/// Runs `command` as `write` describes: the one path from a request to the event stream.
pub(crate) async fn run(
    state: &AppState,
    write: Write<'_>,
    mut command: InstanceCommand,
) -> Result<Written, ApiError> {
    let Write { project, kind, mut instance_id, expected_version, headers, fingerprint, actor } = write;
    let mut operation_id = Uuid::now_v7();
    let mut claimed = None;
    let mut retried = false;
    if let Some(key) = extract::idempotency_key(headers)? {
        let record = IdempotencyRecord {
            fingerprint: digest(&fingerprint),
            operation_id,
            instance_id,
            created_at: Utc::now(),
        };
        let (bucket_key, claim) = claim_key(state, project, &key, &record).await?;
        match claim {
            Claim::Fresh => claimed = Some((bucket_key, record)),
            Claim::Mismatch(_) => return Err(key_reused()),
            Claim::Replay(first) => {
                if state.read_models.read().operation(project, first.operation_id).is_some() {
                    return existing_operation(state, project, first.operation_id);
                }
                // The read models may only lag: the stream says whether the first request's command landed.
                // Running it again would then emit nothing and answer a made-up success.
                if let Some(landed) = state
                    .commands
                    .find_command(project, first.instance_id, first.operation_id, first.created_at)
                    .await
                    .map_err(ApiError::from)?
                {
                    // Landed: answer with its operation as the read models show it, once they do.
                    let shown = state
                        .read_models
                        .wait_until(state.read_wait, |m| m.operation(project, first.operation_id).is_some())
                        .await;
                    if shown {
                        return existing_operation(state, project, first.operation_id);
                    }
                    let operation = Operation {
                        id: first.operation_id,
                        operation_type: OperationType::convert(kind),
                        state: OperationStatus::InProgress,
                        instance_id: first.instance_id,
                        instance_version: landed.version,
                        backup_id: None,
                        created_at: landed.time,
                        error: None,
                    };
                    return Ok(Written {
                        operation,
                        version: landed.version,
                        sequence: Some(landed.sequence),
                    });
                }
                // It has not landed (refused, lost before its publish, or still running in another
                // request): run it again under the same ids. The command id is the message id, so a first
                // attempt that lands meanwhile is not stored twice; no need to wait for it.
                operation_id = first.operation_id;
                instance_id = first.instance_id;
                retried = true;
                if let InstanceCommand::Provision(provision) = &mut command {
                    provision.instance_id = instance_id;
                }
            }
        }
    }

    let mut metadata = CommandMetadata::new(kind, actor.actor());
    metadata.command_id = operation_id;
    metadata.correlation_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    metadata.idempotency_key = claimed.as_ref().map(|(key, _)| key.clone());
    let created_at = metadata.time;
    let result = if kind == OperationKind::Provision && !retried {
        // The instance id was generated for this request: nothing to load.
        state.commands.provision_new(project, instance_id, command, metadata).await
    } else {
        state.commands.execute(project, instance_id, command, expected_version, metadata).await
    };
    let committed = match result {
        Ok(committed) => committed,
        Err(e) => {
            // A refusal is final, so a retry with the same key should be judged again; an unknown outcome
            // keeps the key, so the retry re-runs under the same ids.
            let refused = !matches!(e, ExecuteError::Unavailable(_));
            if let (true, Some((key, record))) = (refused, &claimed)
                && let Err(forget) = state.idempotency.forget(key, record).await
            {
                tracing::warn!(error = %forget, "idempotency key of a refused request not forgotten");
            }
            return Err(e.into());
        }
    };

    // A fault point for api/tests/kill.rs, compiled into debug builds only: the command is stored and the
    // process dies before it answers, the one outcome a client cannot tell from a lost request.
    #[cfg(debug_assertions)]
    if std::env::var_os("CP_FAULT_ABORT_AFTER_STORE").is_some() {
        std::process::abort();
    }

    let operation = if !committed.events.is_empty() {
        Operation {
            id: operation_id,
            operation_type: OperationType::convert(kind),
            state: OperationStatus::InProgress,
            instance_id,
            instance_version: committed.version,
            backup_id: None,
            created_at,
            error: None,
        }
    } else if kind == OperationKind::Deprovision {
        // Deprovisioning again: answer with the operation that started it, once the read models show it.
        if let Err(e) = catch_up(state).await {
            tracing::warn!(error = %e, "answering a repeated deprovision without the first operation");
        }
        let first =
            state.read_models.read().instance(project, instance_id).and_then(|v| v.deprovision_operation);
        let first = first.and_then(|id| state.read_models.read().operation(project, id));
        match first {
            Some(op) => Operation::convert(&op),
            None => no_op(operation_id, kind, instance_id, committed.version, created_at),
        }
    } else {
        // Nothing changed: the operation is done as of this version.
        no_op(operation_id, kind, instance_id, committed.version, created_at)
    };
    Ok(Written { operation, version: committed.version, sequence: committed.stream_sequence })
}

fn no_op(
    id: Uuid,
    kind: OperationKind,
    instance_id: Uuid,
    version: u64,
    created_at: chrono::DateTime<Utc>,
) -> Operation {
    Operation {
        id,
        operation_type: OperationType::convert(kind),
        state: OperationStatus::Succeeded,
        instance_id,
        instance_version: version,
        backup_id: None,
        created_at,
        error: None,
    }
}

fn existing_operation(state: &AppState, project: &str, id: Uuid) -> Result<Written, ApiError> {
    let operation = state.read_models.read().operation(project, id);
    match operation {
        Some(op) => Ok(Written {
            operation: Operation::convert(&op),
            version: op.instance_version,
            sequence: Some(op.sequence),
        }),
        None => Err(ApiError::NotFound("operation")),
    }
}

/// 202 with the operation, where to poll it, and the instance version it produced.
fn accepted(project: &str, operation: Operation, version: u64, sequence: Option<u64>) -> Response {
    let location = format!("/v1/projects/{project}/operations/{}", operation.id);
    let mut response = (StatusCode::ACCEPTED, Json(operation)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(tag) = HeaderValue::from_str(&etag(version)) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
    if let Some(sequence) = sequence {
        headers.insert(STREAM_SEQUENCE, HeaderValue::from(sequence));
    }
    response
}

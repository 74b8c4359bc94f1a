//! Time travel over an instance's events: its history (`GET …/history`), its state at a moment
//! (`GET …/instances/{id}?as_of=`), and what changed between two moments (`GET …/diff`). All three read
//! the instance's subjects of the event stream (`streams::history`); the state at a moment is the
//! projector's own fold (`projections::ReadModel`) over the messages stored until then, so it is what a
//! GET would have answered at that moment, observed status included.

use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use chrono::{DateTime, Utc};
use projections::ReadModel;
use streams::{
    envelope::EventBatch,
    history::{HistoryMessage, HistoryRange, read_instance_history},
    observed::{ObservedMessage, is_observed_subject},
};
use uuid::Uuid;

use super::instances::current_instance;
use crate::dto::Convert as _;
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{
        ChainBreak, ChainVerification, DiffParams, HistoryEntry, HistoryPage, HistoryParams, HistorySource,
        Instance, InstanceDiff, changes,
    },
    error::{FieldError, Problem},
};

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::BadRequest { code: "invalid_query", detail: e.body_text(), errors: vec![] }
}

fn unavailable(e: String) -> ApiError {
    ApiError::Unavailable(format!("event stream unavailable: {e}"))
}

/// The clusters an instance's subjects are under: where it runs and every cluster a move involved (from
/// its aggregate, which outlives deprovisioning).
async fn located(state: &AppState, project: &str, id: &str) -> Result<(Uuid, Vec<String>), ApiError> {
    let (instance_id, current) = current_instance(state, project, id).await?;
    current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    Ok((instance_id, current.aggregate.clusters_involved()))
}

/// The entries of one message.
fn entries(message: &HistoryMessage) -> Vec<HistoryEntry> {
    let base = |source, event_type: String, actor: String, data| HistoryEntry {
        sequence: message.sequence,
        time: message.stored_at,
        source,
        event_type,
        actor,
        operation: None,
        operation_id: None,
        correlation_id: None,
        causation_id: None,
        backup_id: None,
        data,
    };
    if is_observed_subject(&message.subject) {
        return match ObservedMessage::from_slice(&message.payload) {
            Ok(observed) => {
                let data =
                    serde_json::to_value(&observed.event).map(|v| v["data"].clone()).unwrap_or_default();
                // Who stated it is what its subject says (NATS binds it to the publisher), not its payload.
                let actor = streams::observed::parse_observed_subject(&message.subject)
                    .map_or_else(|| format!("cluster-agent/{}", observed.cluster), |s| s.actor());
                let mut entry =
                    base(HistorySource::Observed, observed.event.type_name().to_owned(), actor, data);
                entry.backup_id = observed.event.backup_id();
                vec![entry]
            }
            Err(e) => vec![unreadable(base, HistorySource::Observed, e.to_string())],
        };
    }
    match EventBatch::from_slice(&message.payload) {
        Ok(batch) => {
            // A backup's aggregate id names the backup; an instance's does not parse as one.
            let backup_id = streams::backups::parse_aggregate_id(&batch.aggregate_id).map(|(_, _, b)| b);
            let meta = &batch.metadata;
            batch
                .events
                .iter()
                .map(|event| HistoryEntry {
                    operation: Some(meta.operation.as_str().to_owned()),
                    operation_id: Some(meta.command_id),
                    correlation_id: meta.correlation_id.clone(),
                    causation_id: meta.causation_id.clone(),
                    backup_id,
                    ..base(
                        HistorySource::Desired,
                        event.event_type.clone(),
                        meta.actor.clone(),
                        event.data.clone(),
                    )
                })
                .collect()
        }
        Err(e) => vec![unreadable(base, HistorySource::Desired, e.to_string())],
    }
}

/// A message that could not be read (it was parked by the projector too): shown, not skipped.
fn unreadable(
    base: impl Fn(HistorySource, String, String, serde_json::Value) -> HistoryEntry,
    source: HistorySource,
    error: String,
) -> HistoryEntry {
    base(source, "Unreadable".into(), String::new(), serde_json::json!({"error": error}))
}

/// Lists every event of an instance and of its backups, decided and observed, in stream order.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/history",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        HistoryParams),
    responses(
        (status = 429, description = "the caller runs as many history reads as it may (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = HistoryPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let _reading = state.limits.history_reads.acquire(&principal)?;
    let Query(params) = query.map_err(bad_query)?;
    let (instance_id, clusters) = located(&state, &project, &id).await?;
    let limit = crate::extract::page_limit(params.limit)?;
    let after = params.page_token.unwrap_or(0);
    // Stream sequences stay below 2^63, the bound the document states.
    if after > i64::MAX as u64 {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            detail: "page_token is not one this API returned".into(),
            errors: vec![FieldError {
                field: "page_token".into(),
                rule: "range".into(),
                detail: format!("at most {}", i64::MAX),
            }],
        });
    }
    let range = HistoryRange { after, until: None, limit: limit + 1 };
    let mut messages = read_instance_history(&state.events, &clusters, &project, instance_id, range)
        .await
        .map_err(unavailable)?;
    let next_page_token = (messages.len() > limit).then(|| {
        messages.truncate(limit);
        messages.last().map(|m| m.sequence.to_string()).unwrap_or_default()
    });
    Ok(Json(HistoryPage { items: messages.iter().flat_map(entries).collect(), next_page_token }))
}

/// The instance as it was at `at` (a moment to come: as it is now); `None` when it did not exist yet.
pub(super) async fn state_as_of(
    state: &AppState,
    project: &str,
    id: &str,
    at: DateTime<Utc>,
) -> Result<Option<Instance>, ApiError> {
    let [then] = states_at(state, project, id, [at]).await?;
    Ok(then)
}

/// The instance at each of `moments`, from one read of its history up to the latest of them: the
/// projector's fold over the messages stored until each moment.
async fn states_at<const N: usize>(
    state: &AppState,
    project: &str,
    id: &str,
    moments: [DateTime<Utc>; N],
) -> Result<[Option<Instance>; N], ApiError> {
    let (instance_id, clusters) = located(state, project, id).await?;
    let until = moments.iter().max().copied();
    let range = HistoryRange { after: 0, until, limit: usize::MAX };
    let messages = read_instance_history(&state.events, &clusters, project, instance_id, range)
        .await
        .map_err(unavailable)?;
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by_key(|&i| moments[i]);
    let mut states: [Option<Instance>; N] = std::array::from_fn(|_| None);
    let mut model = ReadModel::default();
    let mut next = messages.iter().peekable();
    for i in order {
        while let Some(message) = next.next_if(|m| m.stored_at <= moments[i]) {
            if let Err(e) =
                model.apply_message(message.sequence, &message.subject, &message.payload, message.stored_at)
            {
                tracing::warn!(sequence = message.sequence, error = %e, "message skipped in a fold as of a moment");
            }
        }
        states[i] = model.instance(project, instance_id).map(Instance::convert);
    }
    Ok(states)
}

/// What changed in an instance between two moments, field by field (its representation as
/// `GET …/instances/{id}?as_of=` shows it at each).
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/diff",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        DiffParams),
    responses(
        (status = 429, description = "the caller runs as many history reads as it may (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = InstanceDiff),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such instance, or not yet at `to`", body = Problem,
            content_type = "application/problem+json"),
    )
)]
pub(super) async fn diff(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    query: Result<Query<DiffParams>, QueryRejection>,
) -> Result<Json<InstanceDiff>, ApiError> {
    let _reading = state.limits.history_reads.acquire(&principal)?;
    let Query(params) = query.map_err(bad_query)?;
    let [before, after] = states_at(&state, &project, &id, [params.from, params.to]).await?;
    // Not there yet at `to`: as `as_of` answers then.
    let after = after.ok_or(ApiError::NotFound("instance"))?;
    let value = |instance: &Instance| serde_json::to_value(instance).unwrap_or_default();
    // Not there yet: every field counts as added.
    let from = before.as_ref().map(value).unwrap_or_else(|| serde_json::json!({}));
    Ok(Json(InstanceDiff {
        from: params.from,
        to: params.to,
        existed_at_from: before.is_some(),
        changes: changes(&from, &value(&after)),
    }))
}

/// Walks the instance's audit chain (its desired and backup subjects; see `streams::chain`) and names the
/// first message that does not follow from the ones before it.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/history/verify",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id")),
    responses(
        (status = 429, description = "the caller runs as many history reads as it may (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = ChainVerification),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn verify(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Json<ChainVerification>, ApiError> {
    let _reading = state.limits.history_reads.acquire(&principal)?;
    let (instance_id, _) = located(&state, &project, &id).await?;
    let filters = streams::instances::instance_event_filters(&project, instance_id);
    let report = streams::chain::verify(&state.events, filters).await.map_err(unavailable)?;
    Ok(Json(ChainVerification {
        intact: report.broken.is_none(),
        messages: report.messages,
        unchained: report.unchained,
        broken_at: report.broken.map(|b| ChainBreak {
            sequence: b.sequence,
            subject: b.subject.clone(),
            detail: b.to_string(),
        }),
    }))
}

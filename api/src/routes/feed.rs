//! The live feed: a project's instance events and observed-state events as Server-Sent Events whose data
//! are CloudEvents 1.0 (structured JSON). The SSE `id` is the JetStream stream sequence, so a client that
//! reconnects with `Last-Event-ID` resumes right after the last event it saw: nothing missed, nothing twice.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use chrono::{DateTime, Utc};
use domain::{OperationKind, observed::ObservedEvent};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use streams::{
    EventBatch,
    envelope::StoredEvent,
    observed::{ObservedMessage, is_observed_subject},
};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{ApiError, AppState, error::Problem};

/// Query of the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedParams {
    /// start after this stream sequence (as `Last-Event-ID` does); without either, only new events
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    after: Option<u64>,
}

/// CloudEvent `type` prefix.
const TYPE_PREFIX: &str = "com.example.cp";

/// A CloudEvent 1.0 in structured JSON mode, as the feed sends it.
#[derive(Debug, Serialize)]
struct CloudEvent<T: Serialize> {
    specversion: &'static str,
    /// the stream sequence (also the SSE `id`)
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    /// the instance id
    subject: String,
    time: DateTime<Utc>,
    datacontenttype: &'static str,
    data: T,
}

/// `data` of `com.example.cp.instance.changed`: one command's events.
#[derive(Debug, Serialize)]
struct InstanceChanged {
    instance_version: u64,
    operation_id: Uuid,
    operation: OperationKind,
    events: Vec<StoredEvent>,
}

/// `data` of `com.example.cp.backup.changed`: one command's events on a backup of the instance.
#[derive(Debug, Serialize)]
struct BackupChanged {
    backup_id: Uuid,
    operation_id: Uuid,
    operation: OperationKind,
    events: Vec<StoredEvent>,
}

/// `data` of `com.example.cp.instance.observed.<type>`: what the cluster's agent observed.
#[derive(Debug, Serialize)]
struct InstanceObserved {
    cluster: String,
    desired_generation: u64,
    schema: String,
    event: ObservedEvent,
}

fn cloud_event<T: Serialize>(
    project: &str,
    sequence: u64,
    instance: String,
    kind: String,
    time: DateTime<Utc>,
    data: T,
) -> CloudEvent<T> {
    CloudEvent {
        specversion: "1.0",
        id: sequence.to_string(),
        source: format!("/v1/projects/{project}/instances/{instance}"),
        event_type: format!("{TYPE_PREFIX}.{kind}"),
        subject: instance,
        time,
        datacontenttype: "application/json",
        data,
    }
}

/// The CloudEvent (as JSON text) for one stored message, or `None` for messages the feed does not show.
fn cloud_event_json(project: &str, subject: &str, sequence: u64, payload: &[u8]) -> Option<String> {
    if is_observed_subject(subject) {
        let message = ObservedMessage::from_slice(payload).ok()?;
        let kind = format!("instance.observed.{}", message.event.type_name());
        let data = InstanceObserved {
            cluster: message.cluster,
            desired_generation: message.desired_generation,
            schema: message.schema,
            event: message.event,
        };
        let event = cloud_event(project, sequence, message.instance_id.to_string(), kind, message.time, data);
        return serde_json::to_string(&event).ok();
    }
    let batch = EventBatch::from_slice(payload).ok()?;
    if let Some((_, instance, backup)) = streams::backups::parse_aggregate_id(&batch.aggregate_id) {
        // A backup's command: about the instance it is of, naming the backup.
        let data = BackupChanged {
            backup_id: backup,
            operation_id: batch.metadata.command_id,
            operation: batch.metadata.operation,
            events: batch.events,
        };
        let event = cloud_event(
            project,
            sequence,
            instance.to_string(),
            "backup.changed".into(),
            batch.metadata.time,
            data,
        );
        return serde_json::to_string(&event).ok();
    }
    let instance = batch.aggregate_id.split_once('.').map(|(_, id)| id.to_owned())?;
    // The snapshot is internal to the event store; subscribers get the events.
    let data = InstanceChanged {
        instance_version: batch.last_version(),
        operation_id: batch.metadata.command_id,
        operation: batch.metadata.operation,
        events: batch.events,
    };
    let event =
        cloud_event(project, sequence, instance, "instance.changed".into(), batch.metadata.time, data);
    serde_json::to_string(&event).ok()
}

/// Follows a project's events.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/events",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event"),
        FeedParams,
    ),
    responses(
        (status = 200, description = "text/event-stream of CloudEvents (JSON); `id` is the stream sequence", content_type = "text/event-stream"),
        (status = 429, description = "the caller holds as many open feeds as it may (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<crate::auth::Principal>,
    Path(project): Path<String>,
    headers: HeaderMap,
    query: Result<Query<FeedParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    domain::instance::check_dns_label("project", &project)?;
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        detail: e.body_text(),
        errors: vec![],
    })?;
    let last_event_id = crate::extract::sequence_header(
        &headers,
        "last-event-id",
        "Last-Event-ID",
        "must be an id this feed sent",
    )?;
    if let Some(after) = params.after
        && after > crate::extract::MAX_SEQUENCE
    {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            detail: format!("after must be at most {}", crate::extract::MAX_SEQUENCE),
            errors: vec![],
        });
    }
    // Held for as long as the feed is open: dropped with the stream when the client goes away.
    let open = state.limits.feeds.acquire(&principal)?;
    let messages = streams::feed::follow_project(&state.events, &project, last_event_id.or(params.after))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let stream = messages.filter_map(move |message| {
        let _open = &open;
        let project = project.clone();
        async move {
            let message = message.ok()?;
            let sequence = message.info().ok()?.stream_sequence;
            let event = cloud_event_json(&project, message.subject.as_str(), sequence, &message.payload)?;
            Some(Ok(Event::default().id(sequence.to_string()).event("cloudevent").data(event)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

//! The live feed: a project's instance events and observed-state events as Server-Sent Events whose data
//! are CloudEvents 1.0 (structured JSON). The SSE `id` is the JetStream stream sequence, so a client that
//! reconnects with `Last-Event-ID` resumes right after the last event it saw: nothing missed, nothing twice.

use std::{convert::Infallible, time::Duration};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use streams::{EventBatch, instances::project_filter, topology::OBSERVED_PREFIX};
use utoipa::IntoParams;

use crate::{ApiError, AppState, error::Problem};

/// Query of the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedParams {
    /// start after this stream sequence (as `Last-Event-ID` does); without either, only new events
    after: Option<u64>,
}

/// CloudEvent `type` prefix.
const TYPE_PREFIX: &str = "com.example.cp";

/// The CloudEvent for one stored message, or `None` for messages the feed does not show.
fn cloud_event(project: &str, subject: &str, sequence: u64, payload: &[u8]) -> Option<Value> {
    if subject.starts_with(OBSERVED_PREFIX) {
        let message: Value = serde_json::from_slice(payload).ok()?;
        let instance = message["instance_id"].as_str()?.to_owned();
        let kind = message["event"]["type"].as_str()?.to_owned();
        return Some(json!({
            "specversion": "1.0",
            "id": format!("{sequence}"),
            "source": format!("/v1/projects/{project}/instances/{instance}"),
            "type": format!("{TYPE_PREFIX}.instance.observed.{kind}"),
            "subject": instance,
            "time": message["time"],
            "datacontenttype": "application/json",
            "data": {"cluster": message["cluster"], "desired_generation": message["desired_generation"],
                     "schema": message["schema"], "event": message["event"]},
        }));
    }
    let batch = EventBatch::from_slice(payload).ok()?;
    let instance = batch.aggregate_id.split_once('.').map(|(_, id)| id.to_owned())?;
    // The snapshot is internal to the event store; subscribers get the events.
    Some(json!({
        "specversion": "1.0",
        "id": format!("{sequence}"),
        "source": format!("/v1/projects/{project}/instances/{instance}"),
        "type": format!("{TYPE_PREFIX}.instance.changed"),
        "subject": instance,
        "time": batch.metadata.time,
        "datacontenttype": "application/json",
        "data": {"instance_version": batch.last_version(), "operation_id": batch.metadata.command_id,
                 "operation": batch.metadata.operation, "events": batch.events},
    }))
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
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
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
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => {
            Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                ApiError::BadRequest {
                    code: "invalid_header",
                    detail: "Last-Event-ID must be an id this feed sent".into(),
                    errors: vec![],
                }
            })?)
        }
        None => None,
    };
    let deliver_policy = match last_event_id.or(params.after) {
        Some(after) => DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
        None => DeliverPolicy::New,
    };
    let observed = format!("{OBSERVED_PREFIX}.*.{project}.>");
    let consumer = state
        .events
        .create_consumer(OrderedConfig {
            filter_subjects: vec![project_filter(&project), observed],
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("event feed unavailable: {e}")))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ApiError::Unavailable(format!("event feed unavailable: {e}")))?;
    let stream = messages.filter_map(move |message| {
        let project = project.clone();
        async move {
            let message = message.ok()?;
            let sequence = message.info().ok()?.stream_sequence;
            let event = cloud_event(&project, message.subject.as_str(), sequence, &message.payload)?;
            Some(Ok(Event::default().id(sequence.to_string()).event("cloudevent").data(event.to_string())))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

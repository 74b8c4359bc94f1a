//! API metrics (OpenMetrics text at `/metrics`): requests by method, route and status, their latency, and
//! how far this replica's read models go.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::AppState;

/// Labels of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// the route template (`/v1/projects/{project}/instances/{id}`), never the concrete path: bounded
    route: String,
    status: u16,
}

/// Labels of a latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The API's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    read_model_sequence: Gauge,
    read_model_skipped: Gauge,
    group_commit: GroupCommitCounters,
}

/// The event store's group committer, copied from its own counters at each scrape.
#[derive(Debug, Clone, Default)]
struct GroupCommitCounters {
    batches: Counter,
    batched_messages: Counter,
    alone_messages: Counter,
    refused_batches: Counter,
    unanswered_batches: Counter,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let (read_model_sequence, read_model_skipped) = (Gauge::default(), Gauge::default());
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("cp_api");
        r.register("requests", "HTTP requests answered, by method, route and status", requests.clone());
        r.register(
            "request_duration_seconds",
            "Time to the response head, by method and route",
            latency.clone(),
        );
        r.register(
            "read_model_sequence",
            "Last event-stream sequence this replica's read models include",
            read_model_sequence.clone(),
        );
        r.register(
            "read_model_skipped_messages",
            "Messages the projector could not apply (unknown event type or schema version)",
            read_model_skipped.clone(),
        );
        let group_commit = GroupCommitCounters::default();
        let g = &group_commit;
        for (name, help, counter) in [
            ("group_commit_batches", "Atomic batches the event store committed", &g.batches),
            ("group_commit_batched_messages", "Commands' messages committed in batches", &g.batched_messages),
            (
                "group_commit_alone_messages",
                "Messages published alone: too few waiting for a batch",
                &g.alone_messages,
            ),
            (
                "group_commit_refused_batches",
                "Batches refused as a whole (members re-sent alone)",
                &g.refused_batches,
            ),
            (
                "group_commit_unanswered_batches",
                "Batches without an answer (members re-sent alone)",
                &g.unanswered_batches,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            read_model_sequence,
            read_model_skipped,
            group_commit,
        }
    }
}

/// Middleware: counts and times every request by its route template.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    metrics.read_model_sequence.set(i64::try_from(state.read_models.applied()).unwrap_or(i64::MAX));
    metrics.read_model_skipped.set(i64::try_from(state.read_models.skipped()).unwrap_or(i64::MAX));
    if let Some(stats) = state.commands.store().commit_stats() {
        let copy = |from: &std::sync::atomic::AtomicU64, to: &Counter| {
            to.inner().store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        let to = &metrics.group_commit;
        copy(&stats.batches, &to.batches);
        copy(&stats.batched_messages, &to.batched_messages);
        copy(&stats.alone_messages, &to.alone_messages);
        copy(&stats.refused_batches, &to.refused_batches);
        copy(&stats.unanswered_batches, &to.unanswered_batches);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        return crate::ApiError::Internal(format!("encoding metrics: {e}")).into_response();
    }
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

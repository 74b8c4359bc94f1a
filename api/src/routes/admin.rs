//! Operator endpoints: cluster registration, and the messages readers parked.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use std::collections::HashMap;

use domain::instance::check_dns_label;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    ApiError, AppState,
    dto::{AgentReport, Cluster, ClusterRequest, ClusterState, ClusterStatus, DeadLetter, DeadLetterPage},
    error::{FieldError, Problem},
    extract::JsonBody,
};

/// Lists registered clusters, sorted by name, with whether each one's agent is heard from, what it last
/// said of itself (version, lag, last reconcile) and how many instances are placed on it.
#[utoipa::path(get, path = "/v1/admin/clusters", tag = "admin", responses((status = 200, body = Vec<ClusterStatus>)))]
pub(super) async fn list_clusters(State(state): State<AppState>) -> Json<Vec<ClusterStatus>> {
    Json(cluster_statuses(&state))
}

/// Every registered cluster's status, sorted by name.
pub(super) fn cluster_statuses(state: &AppState) -> Vec<ClusterStatus> {
    let (mut instances, mut migrating) = (HashMap::<String, usize>::new(), HashMap::<String, usize>::new());
    for view in state.read_models.read().all_instances().filter(|v| !v.removed) {
        *instances.entry(view.spec().cluster.clone()).or_default() += 1;
        if view.instance.migration().is_some() {
            *migrating.entry(view.spec().cluster.clone()).or_default() += 1;
        }
    }
    state
        .clusters
        .list()
        .into_iter()
        .map(|c| {
            let record = state.liveness.get(&c.name);
            let fleet = state.clusters.fleet_state(&c.name);
            ClusterStatus {
                instances: instances.get(&c.name).copied().unwrap_or_default(),
                state: match record.as_ref().map(|r| r.state) {
                    Some(streams::liveness::ClusterState::Reachable) => ClusterState::Reachable,
                    Some(streams::liveness::ClusterState::Unreachable) => ClusterState::Unreachable,
                    None => ClusterState::NeverSeen,
                },
                since: record.as_ref().map(|r| r.since),
                agent: record.map(|r| AgentReport {
                    agent: r.heartbeat.agent,
                    version: r.heartbeat.version,
                    lag: r.heartbeat.lag,
                    last_reconcile: r.heartbeat.last_reconcile,
                    last_heartbeat: r.last_heartbeat,
                }),
                cordoned: fleet.cordoned || fleet.drain.is_some(),
                draining: fleet.drain.map(|d| d.parallel),
                migrating: migrating.get(&c.name).copied().unwrap_or_default(),
                name: c.name,
                region: c.region,
            }
        })
        .collect()
}

/// Registers a cluster (or changes its region). New instances may be placed on it at once.
#[utoipa::path(
    put,
    path = "/v1/admin/clusters/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "cluster name, a DNS-1123 label")),
    request_body = ClusterRequest,
    responses(
        (status = 200, body = Cluster),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn register_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: JsonBody<ClusterRequest>,
) -> Result<Json<Cluster>, ApiError> {
    check_dns_label("name", &name)?;
    check_dns_label("region", &body.value.region)?;
    let cluster = domain::Cluster { name, region: body.value.region };
    state.clusters.register(&cluster).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(Cluster { name: cluster.name, region: cluster.region }))
}

/// Query of the dead-letter list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterParams {
    /// list what was parked after this position (a `sequence` or `next_after` from an earlier page)
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    after: Option<u64>,
    /// at most this many (default 100)
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// Messages the projector or an agent could not use (bad JSON, an unknown event type, a newer schema),
/// oldest first. Each was counted, parked here and skipped; the original stays in its stream.
#[utoipa::path(
    get,
    path = "/v1/admin/dead-letters",
    tag = "admin",
    params(DeadLetterParams),
    responses(
        (status = 200, body = DeadLetterPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn dead_letters(
    State(state): State<AppState>,
    query: Result<Query<DeadLetterParams>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        detail: e.body_text(),
        errors: vec![],
    })?;
    let after = params.after.unwrap_or(0);
    let limit = params.limit.unwrap_or(100);
    let out_of_range = |field: &str, rule: &str| ApiError::BadRequest {
        code: "invalid_query",
        detail: format!("{field} is out of range ({rule})"),
        errors: vec![FieldError { field: field.into(), rule: "range".into(), detail: rule.into() }],
    };
    if !(1..=500).contains(&limit) {
        return Err(out_of_range("limit", "1 to 500"));
    }
    if after > crate::extract::MAX_SEQUENCE {
        return Err(out_of_range("after", "at most 2^63 - 1"));
    }
    let jetstream = async_nats::jetstream::new(state.nats.clone());
    let parked = streams::dead_letters::list(&jetstream, after, limit)
        .await
        .map_err(|e| ApiError::Unavailable(format!("dead-letter stream unavailable: {e}")))?;
    let next_after = (parked.len() == limit).then(|| parked.last().map(|(sequence, _)| *sequence)).flatten();
    let items = parked
        .into_iter()
        .map(|(sequence, letter)| DeadLetter {
            sequence,
            reader: match letter.reader {
                streams::dead_letters::Reader::Projector => "projector".into(),
                streams::dead_letters::Reader::Agent { cluster } => format!("agent:{cluster}"),
                streams::dead_letters::Reader::RefusedFact { cluster } => {
                    format!("projector:refused:{cluster}")
                }
            },
            stream: letter.stream,
            stream_sequence: letter.sequence,
            subject: letter.subject,
            reason: letter.reason,
            parked_at: letter.parked_at,
            payload: letter.payload,
        })
        .collect();
    Ok(Json(DeadLetterPage { items, next_after }))
}

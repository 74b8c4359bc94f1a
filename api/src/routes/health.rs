//! Liveness and readiness probes.

use std::time::Duration;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{ApiError, AppState, error::Problem};

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: NATS is reachable and the event stream exists.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "ready"),
        (status = 503, description = "not ready", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let connection = state.nats.connection_state();
    if connection != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable(format!("NATS connection is {connection}")));
    }
    let mut events = state.events.clone();
    match tokio::time::timeout(Duration::from_secs(2), events.info()).await {
        Ok(Ok(info)) => Ok(Json(json!({
            "status": "ready",
            "stream": info.config.name,
            "stream_last_sequence": info.state.last_sequence,
            "read_model_sequence": state.read_models.applied(),
            "read_model_skipped_messages": state.read_models.skipped(),
        }))),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!("event stream unavailable: {e}"))),
        Err(_) => Err(ApiError::Unavailable("event stream did not answer within 2s".into())),
    }
}

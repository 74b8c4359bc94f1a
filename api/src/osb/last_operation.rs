//! `GET /v2/service_instances/:instance_id/last_operation` (spec *Polling Last Operation for Service
//! Instances*): where the operation a 202 returned is, from the read models (the same state `/v1`'s
//! operations show). Without `operation`, the instance's last one. After an asynchronous deprovision has
//! completed the instance is gone: 410, which the platform "MUST consider … a success".

use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use projections::{OperationKind, OperationState, OperationView};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    body::{self, OsbPath},
    error::{OsbError, Request},
    ids, lookup,
};
use crate::{
    AppState,
    auth::{Principal, Role},
    routes::write,
};

/// Polls an instance's operation.
pub(super) async fn instance_last_operation(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath(platform_id): OsbPath<String>,
    query: body::Query,
) -> Result<Response, OsbError> {
    let id = ids::instance_id(&platform_id);
    let Some(found) = lookup::find_for(&state, &principal, id, Role::Viewer).await? else {
        return Err(OsbError::not_found("no such service instance"));
    };
    if found.view.removed {
        return Err(OsbError::gone("service instance: it was deprovisioned"));
    }
    let operation = match query.operation.as_deref() {
        Some(given) => Some(given.parse::<Uuid>().map_err(|_| {
            OsbError::bad_request(format!("operation {given:?} is no operation this broker returned"))
        })?),
        None => lookup::last_command(&state, &found.project, id).await?,
    };
    let Some(operation) = operation else {
        return Err(OsbError::not_found("no such service instance"));
    };
    let shown = state.read_models.read().operation(&found.project, operation);
    let view = match shown {
        Some(view) => Some(view),
        None => {
            write::catch_up(&state).await.map_err(|e| OsbError::from_api(e, Request::Read))?;
            state.read_models.read().operation(&found.project, operation)
        }
    };
    let Some(view) = view.filter(|v| v.instance_id == id) else {
        return Err(OsbError::bad_request(format!(
            "operation {operation} is no operation of this service instance"
        )));
    };
    let mut answer = poll_answer(&view);
    // An update whose restart parameters wait for the maintenance window is done as far as it goes: say
    // what waits, and how to apply it now.
    let held =
        found.view.spec().pending_maintenance.configuration.as_ref().map(|held| held.parameters.join(", "));
    if let (Some(held), OperationKind::Update, OperationState::Succeeded) = (held, view.kind, &view.state) {
        let description = format!(
            "update: done; held for the maintenance window (they need a restart): {held}; apply now with POST \
             /v1/projects/{}/instances/{id}/maintenance/apply",
            found.project
        );
        answer = Json(json!({"state": "succeeded", "description": description})).into_response();
    }
    Ok(answer)
}

/// The `LastOperationResource` of an operation, with `Retry-After` while it runs.
pub(super) fn poll_answer(view: &OperationView) -> Response {
    let kind = view.kind.as_str();
    let mut body = Map::new();
    let in_progress = matches!(view.state, OperationState::InProgress);
    match &view.state {
        OperationState::InProgress => {
            body.insert("state".into(), json!("in progress"));
            body.insert("description".into(), json!(format!("{kind}: in progress")));
        }
        OperationState::Succeeded => {
            body.insert("state".into(), json!("succeeded"));
            body.insert("description".into(), json!(format!("{kind}: done")));
        }
        OperationState::Failed { reason, instance_usable, update_repeatable } => {
            body.insert("state".into(), json!("failed"));
            body.insert("description".into(), json!(format!("{kind} failed: {reason}")));
            // Only for updates and deprovisions ("MUST NOT be present for errors of other operations").
            if matches!(view.kind, OperationKind::Update | OperationKind::Deprovision) {
                body.insert("instance_usable".into(), json!(instance_usable));
            }
            if view.kind == OperationKind::Update {
                body.insert("update_repeatable".into(), json!(update_repeatable));
            }
        }
    }
    let mut response = Json(Value::Object(body)).into_response();
    if in_progress {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}

//! Service Bindings are the instance's users (spec *Binding*, *Fetching a Service Binding*, *Unbinding*,
//! *Polling Last Operation for Service Bindings*; issue 27): a bind runs `CreateUser`, an unbind
//! `DeleteUser`, through the same write path `/v1`'s users routes use. A binding's user is named after its
//! id (`super::ids::binding_user`), so the mapping is durable without a record; its role is the binding's
//! `role` parameter (the service's first catalog role when absent).
//!
//! Binding is asynchronous (the cluster makes the user and its password): a bind answers 202 with the
//! operation and never credentials; the platform reads them from `GET …/service_bindings/:binding_id` once
//! `last_operation` says `succeeded`, fetched from the instance's cluster at that moment (the password is
//! never stored by the control plane, as for `/v1`'s users).
//!
//! Rotation (spec *Binding Rotation*): a bind naming `predecessor_binding_id` makes a new user with the
//! predecessor's role; the predecessor's user stays until it is unbound ("Both Service Bindings, the new
//! and the old one, MUST both be valid in parallel until they expired or are deleted").

use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, instance::users};
use projections::{OperationKind, UserState, user_views};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    auth::acting,
    body::{self, OsbPath, Raw},
    catalog::bindable,
    error::{OsbError, Request},
    ids,
    instances::resolve,
    last_operation::poll_answer,
    lookup::{self, Found},
};
use crate::{
    ApiError, AppState,
    auth::{Principal, Role},
    dto::OperationStatus,
    routes::write::{self, Write},
};

/// `PUT …/service_bindings/:binding_id` (spec *Request (Creating a Service Binding)* and *Request
/// (Rotating a Service Binding)*: a rotation carries only `predecessor_binding_id`).
#[derive(Debug, Deserialize)]
struct BindBody {
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    predecessor_binding_id: Option<String>,
}

/// The instance a binding route names, if the caller may act on it; 422 when there is none (binding has
/// no 404: spec *Binding*, *Response*).
async fn instance(
    state: &AppState,
    principal: &Principal,
    platform_id: &str,
    role: Role,
) -> Result<Option<Found>, OsbError> {
    let id = ids::instance_id(platform_id);
    Ok(lookup::find_for(state, principal, id, role)
        .await?
        .filter(|f| !f.view.removed && f.view.deprovisioning.is_none()))
}

fn not_bindable(found: &Found) -> OsbError {
    let spec = found.view.spec();
    let mut refused = OsbError::bad_request(format!(
        "plan {} of {} is not bindable (the catalog says bindable: false): the broker makes users of {} only",
        spec.plan,
        spec.service,
        users::USER_SERVICES.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    ));
    refused.error = "NotBindable".into();
    refused
}

/// The role a bind asks for: `parameters.role`, one of the service's catalog roles; the first when absent.
fn role(parameters: Option<&Value>, service: domain::ServiceType) -> Result<String, OsbError> {
    let roles = users::user_roles(service);
    let asked = match parameters {
        None | Some(Value::Null) => None,
        Some(Value::Object(object)) => {
            if let Some(other) = object.keys().find(|k| *k != "role") {
                return Err(OsbError::bad_request(format!(
                    "parameters.{other}: not a binding parameter (only role)"
                )));
            }
            match object.get("role") {
                None => None,
                Some(Value::String(role)) => Some(role.clone()),
                Some(_) => return Err(OsbError::bad_request("parameters.role must be a string")),
            }
        }
        Some(_) => return Err(OsbError::bad_request("parameters must be a JSON object")),
    };
    match asked {
        None => Ok(roles[0].to_owned()),
        Some(role) if roles.contains(&role.as_str()) => Ok(role),
        Some(role) => Err(OsbError::bad_request(format!(
            "parameters.role: {service} users have the roles {}, not {role:?}",
            roles.join(", ")
        ))),
    }
}

/// Creates a Service Binding: a user of the instance (202; its credentials come from fetching the binding).
pub(super) async fn bind(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath((platform_id, binding_id)): OsbPath<(String, String)>,
    query: body::Query,
    headers: HeaderMap,
    Raw(raw): Raw,
) -> Result<Response, OsbError> {
    let accepts_incomplete = query.accepts_incomplete()?;
    let request: BindBody = body::json(&headers, &raw, Request::Bind)?;
    let Some(found) = instance(&state, &principal, &platform_id, Role::Editor).await? else {
        return Err(OsbError::no_such_instance());
    };
    let spec = found.view.spec().clone();
    if let Some(service_id) = &request.service_id {
        let (offering, _) = resolve(state.catalog(), service_id, request.plan_id.as_deref())?;
        if offering.service != spec.service {
            return Err(OsbError::bad_request(format!(
                "service_id names {}, the service instance is {}",
                offering.service, spec.service
            )));
        }
    } else if request.predecessor_binding_id.is_none() {
        return Err(OsbError::bad_request("service_id is required (only a rotation may leave it out)"));
    }
    if !bindable(spec.service) {
        return Err(not_bindable(&found));
    }
    let context_platform = request.context.as_ref().and_then(|c| c.get("platform")).and_then(Value::as_str);
    let actor = acting(&principal, &headers, context_platform)?;
    let role = match &request.predecessor_binding_id {
        // Spec *Binding Rotation*: the successor of a binding of the same instance, with its parameters.
        Some(predecessor) => {
            let name = ids::binding_user(predecessor);
            let user = spec.users.iter().find(|u| u.name == name).ok_or_else(|| {
                OsbError::bad_request(format!(
                    "predecessor_binding_id {predecessor:?} is no binding of this service instance"
                ))
            })?;
            user.role.clone()
        }
        None => role(request.parameters.as_ref(), spec.service)?,
    };
    let name = ids::binding_user(&binding_id);
    let key = format!("osb:{}:bind:{name}", spec.id);
    if let Some(existing) = spec.users.iter().find(|u| u.name == name) {
        if existing.role != role {
            return Err(OsbError::conflict("a service binding with this id exists with other parameters"));
        }
        let applied = user_state(&found, &name) == Some(UserState::Applied);
        if applied {
            // Spec *Binding*, 200: it exists with identical parameters.
            return credentials(&state, &found, &name, &role).await;
        }
    }
    if !accepts_incomplete {
        return Err(OsbError::async_required("binding (making a user of the instance)"));
    }
    let mut write_headers = HeaderMap::new();
    write_headers.insert(
        "idempotency-key",
        HeaderValue::from_str(&key)
            .map_err(|e| OsbError::from_api(ApiError::Internal(e.to_string()), Request::Bind))?,
    );
    let path = format!("/v2/service_instances/{platform_id}/service_bindings/{binding_id}");
    let fingerprint = json!({"name": name, "role": role}).to_string();
    let command = InstanceCommand::CreateUser { name: name.clone(), role };
    let write = Write {
        project: &found.project,
        kind: OperationKind::CreateUser,
        instance_id: spec.id,
        expected_version: None,
        headers: &write_headers,
        fingerprint: [Method::PUT.as_str().as_bytes(), path.as_bytes(), fingerprint.as_bytes()],
        actor: &actor,
    };
    let written =
        write::run(&state, write, command).await.map_err(|e| OsbError::from_api(e, Request::Bind))?;
    if matches!(written.operation.state, OperationStatus::Failed) {
        return Err(OsbError::conflict("the service binding with this id failed; unbind it and bind again"));
    }
    // Never credentials in a 202 (spec *Binding*, 202: "Information regarding the Service Binding (i.e.
    // credentials) MUST NOT be returned in this response").
    Ok((StatusCode::ACCEPTED, Json(json!({"operation": written.operation.id.to_string()}))).into_response())
}

fn user_state(found: &Found, name: &str) -> Option<UserState> {
    let spec = found.view.spec();
    user_views(&spec.users, found.view.observed.as_ref())
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.state)
}

/// The binding's credentials, read from the instance's cluster now.
async fn credentials(state: &AppState, found: &Found, name: &str, role: &str) -> Result<Response, OsbError> {
    let spec = found.view.spec();
    let response =
        crate::routes::credentials::fetch(state, &found.project, spec.id, spec, Some(name.to_owned()))
            .await
            .map_err(|e| OsbError::from_api(e, Request::Read))?;
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map_err(|e| OsbError::from_api(ApiError::Internal(e.to_string()), Request::Read))?;
    let read: wire::Credentials = serde_json::from_slice(&bytes)
        .map_err(|e| OsbError::from_api(ApiError::Internal(e.to_string()), Request::Read))?;
    let body = json!({
        "credentials": {
            "username": read.username, "password": read.password, "host": read.host, "port": read.port,
        },
        "endpoints": [{"host": read.host, "ports": [read.port.to_string()], "protocol": "tcp"}],
        "parameters": {"role": role},
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Fetches a Service Binding with its credentials (spec *Fetching a Service Binding*): 404 while it is
/// being made, or when there is none.
pub(super) async fn fetch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath((platform_id, binding_id)): OsbPath<(String, String)>,
) -> Result<Response, OsbError> {
    // Credentials let their holder into the database: the editor's role, as on `/v1`.
    let found = instance(&state, &principal, &platform_id, Role::Editor).await?;
    let name = ids::binding_user(&binding_id);
    let Some(found) = found else { return Err(OsbError::not_found("no such service binding")) };
    let Some(user) = found.view.spec().users.iter().find(|u| u.name == name).cloned() else {
        return Err(OsbError::not_found("no such service binding"));
    };
    if user_state(&found, &name) != Some(UserState::Applied) {
        return Err(OsbError::not_found("the service binding is still being made"));
    }
    credentials(&state, &found, &name, &user.role).await
}

/// Polls a binding's operation (spec *Polling Last Operation for Service Bindings*); 410 once an unbind
/// has removed it.
pub(super) async fn last_operation(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath((platform_id, binding_id)): OsbPath<(String, String)>,
    query: body::Query,
) -> Result<Response, OsbError> {
    let id = ids::instance_id(&platform_id);
    let Some(found) = lookup::find_for(&state, &principal, id, Role::Viewer).await? else {
        return Err(OsbError::not_found("no such service binding"));
    };
    let name = ids::binding_user(&binding_id);
    let exists = found.view.spec().users.iter().any(|u| u.name == name);
    let Some(operation) = query.operation.as_deref() else {
        return match user_state(&found, &name) {
            None if !found.users_settled() => Ok(Json(json!({"state": "in progress"})).into_response()),
            None => Err(OsbError::gone("service binding")),
            Some(UserState::Applied) => Ok(Json(json!({"state": "succeeded"})).into_response()),
            Some(UserState::Pending) => Ok(Json(json!({"state": "in progress"})).into_response()),
            Some(UserState::Error) => Ok(Json(json!({"state": "failed"})).into_response()),
        };
    };
    let operation: Uuid = operation.parse().map_err(|_| {
        OsbError::bad_request(format!("operation {operation:?} is no operation this broker returned"))
    })?;
    let shown = state.read_models.read().operation(&found.project, operation);
    let view = match shown {
        Some(view) => Some(view),
        None => {
            write::catch_up(&state).await.map_err(|e| OsbError::from_api(e, Request::Read))?;
            state.read_models.read().operation(&found.project, operation)
        }
    };
    let Some(view) = view.filter(|v| {
        v.instance_id == id && matches!(v.kind, OperationKind::CreateUser | OperationKind::DeleteUser)
    }) else {
        return Err(OsbError::bad_request(format!(
            "operation {operation} is no operation of this service binding"
        )));
    };
    if view.kind == OperationKind::DeleteUser
        && !exists
        && matches!(view.state, projections::OperationState::Succeeded)
    {
        return Err(OsbError::gone("service binding: it was unbound"));
    }
    Ok(poll_answer(&view))
}

/// Deletes a Service Binding: the instance's user is deleted, and the engine revokes it (202); 410 when
/// there is none.
pub(super) async fn unbind(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath((platform_id, binding_id)): OsbPath<(String, String)>,
    query: body::Query,
    headers: HeaderMap,
) -> Result<Response, OsbError> {
    let accepts_incomplete = query.accepts_incomplete()?;
    body::Query::required(&query.service_id, "service_id")?;
    body::Query::required(&query.plan_id, "plan_id")?;
    let Some(found) = instance(&state, &principal, &platform_id, Role::Editor).await? else {
        return Err(OsbError::gone("service binding"));
    };
    let name = ids::binding_user(&binding_id);
    if !found.view.spec().users.iter().any(|u| u.name == name) {
        // Spec *Unbinding*, *Response*: 202 "Service Binding deletion is in progress", 410 once it does
        // not exist. A binding whose user is deleted but maybe not yet revoked is still being unbound; its
        // operation is not kept per user, so the answer carries none and the platform polls
        // `last_operation` without one (answered the same way below).
        return if found.users_settled() {
            Err(OsbError::gone("service binding"))
        } else {
            Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
        };
    }
    if !accepts_incomplete {
        return Err(OsbError::async_required("unbinding (deleting the user)"));
    }
    let actor = acting(&principal, &headers, None)?;
    let path = format!("/v2/service_instances/{platform_id}/service_bindings/{binding_id}");
    let write = Write {
        project: &found.project,
        kind: OperationKind::DeleteUser,
        instance_id: found.view.spec().id,
        expected_version: None,
        headers: &HeaderMap::new(),
        fingerprint: [Method::DELETE.as_str().as_bytes(), path.as_bytes(), b""],
        actor: &actor,
    };
    let command = InstanceCommand::DeleteUser { name };
    let written = match write::run(&state, write, command).await {
        Ok(written) => written,
        // Deleted by another request between the check and the command.
        Err(ApiError::NotFound(_)) => return Err(OsbError::gone("service binding")),
        Err(e) => return Err(OsbError::from_api(e, Request::Unbind)),
    };
    Ok((StatusCode::ACCEPTED, Json(json!({"operation": written.operation.id.to_string()}))).into_response())
}

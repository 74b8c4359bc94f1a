//! Service Instances: provision, fetch, update and deprovision (spec *Provisioning*, *Fetching a Service
//! Instance*, *Updating a Service Instance*, *Deprovisioning*), each one instance command through the
//! API's one write path (`routes::write::run`, as `/v1` runs it): the broker adds no path to the stream.
//!
//! Every change is asynchronous (the agent applies it on its cluster), so a change without
//! `accepts_incomplete=true` is 422 `AsyncRequired`; its `operation` is the `/v1` operation id. A refusal
//! (4xx) stores nothing: every check runs before the command, and the command itself is all-or-nothing.

use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, ProvisionInstance, UpdateInstance, catalog::ServiceOffering, placement};
use projections::OperationKind;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    auth::{acting, require},
    body::{self, OsbPath, Parameters, ProvisionBody, Raw, UpdateBody},
    catalog::newest_version,
    error::{OsbError, Request},
    ids,
    lookup::{self, Found},
};
use crate::{
    ApiError, AppState,
    auth::{Principal, Role},
    dto::OperationStatus,
    routes::write::{self, Write, Written},
};

/// The catalog's offering and plan that OSB ids name; 400 naming the field when there is none.
pub(super) fn resolve<'a>(
    catalog: &'a domain::Catalog,
    service_id: &str,
    plan_id: Option<&str>,
) -> Result<(&'a ServiceOffering, Option<&'a domain::Plan>), OsbError> {
    let offering =
        catalog.offerings().iter().find(|o| ids::service_id(o.service) == service_id).ok_or_else(|| {
            OsbError::bad_request(format!("service_id {service_id:?} is no service of this broker's catalog"))
        })?;
    let plan = match plan_id {
        None => None,
        Some(plan_id) => Some(
            offering.plans.iter().find(|p| ids::plan_id(offering.service, &p.name) == plan_id).ok_or_else(
                || {
                    OsbError::bad_request(format!(
                        "plan_id {plan_id:?} is no plan of service {}",
                        offering.service
                    ))
                },
            )?,
        ),
    };
    Ok((offering, plan))
}

/// 422 `MaintenanceInfoConflict` unless `asked` is the catalog's `maintenance_info.version` of the plan.
fn check_maintenance_info(
    asked: Option<&body::MaintenanceInfo>,
    offering: &ServiceOffering,
) -> Result<bool, OsbError> {
    let offered = ids::maintenance_version(newest_version(offering));
    match asked {
        None => Ok(false),
        Some(info) if info.version == offered => Ok(true),
        Some(info) => Err(OsbError::maintenance_info_conflict(&info.version, &offered)),
    }
}

/// Runs `command` through the write path, under Idempotency-Key `key` when given (a re-sent request then
/// answers with the first one's operation), recording `actor`.
#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    request_headers: &HeaderMap,
    project: &str,
    kind: OperationKind,
    instance_id: Uuid,
    expected_version: Option<u64>,
    key: Option<String>,
    fingerprint: [&[u8]; 3],
    actor: &Principal,
    command: InstanceCommand,
    request: Request,
) -> Result<Written, OsbError> {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        let value = HeaderValue::from_str(&key)
            .map_err(|e| OsbError::from_api(ApiError::Internal(e.to_string()), request))?;
        headers.insert("idempotency-key", value);
    }
    // The platform's request identity (spec *Request Identity*) is the command's correlation id.
    let correlation =
        request_headers.get("x-broker-api-request-identity").or_else(|| request_headers.get("x-request-id"));
    if let Some(correlation) = correlation {
        headers.insert("x-request-id", correlation.clone());
    }
    let write = Write { project, kind, instance_id, expected_version, headers: &headers, fingerprint, actor };
    write::run(state, write, command).await.map_err(|e| OsbError::from_api(e, request))
}

fn accepted(operation: Uuid) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "operation": operation.to_string() }))).into_response()
}

fn ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

/// Provisions a Service Instance (spec *Provisioning*).
///
/// A re-sent PUT with the same attributes answers with the first one's operation (202) while it runs and
/// 200 once the instance is provisioned; other attributes for an existing id are 409.
pub(super) async fn provision(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath(platform_id): OsbPath<String>,
    query: body::Query,
    headers: HeaderMap,
    Raw(raw): Raw,
) -> Result<Response, OsbError> {
    let accepts_incomplete = query.accepts_incomplete()?;
    let request: ProvisionBody = body::json(&headers, &raw, Request::Provision)?;
    let catalog = state.catalog();
    let (offering, plan) = resolve(catalog, &request.service_id, Some(&request.plan_id))?;
    let plan = plan.expect("a plan id was given");
    check_maintenance_info(request.maintenance_info.as_ref(), offering)?;
    let project = ids::project(request.context.as_ref(), request.space_guid.as_deref())?;
    require(&principal, &project, Role::Editor)?;
    let context_platform = request.context.as_ref().and_then(|c| c.get("platform")).and_then(Value::as_str);
    let actor = acting(&principal, &headers, context_platform)?;
    let parameters = body::parameters(request.parameters.as_ref(), offering, true)?;
    let id = ids::instance_id(&platform_id);

    // What makes two provisions the same: where, what, and the parameters asked for.
    let attributes = json!({
        "project": project, "service": offering.service, "plan": plan.name, "parameters": parameters,
    });
    let fingerprint = attributes.to_string();
    let path = format!("/v2/service_instances/{platform_id}");
    let key = format!("osb:{id}:provision");

    let existing = lookup::find(&state, id).await?;
    match &existing {
        Some(existing) if !same_instance(existing, &project, offering, &plan.name, &parameters) => {
            return Err(OsbError::conflict(
                "a service instance with this id exists (or is being provisioned or deleted) with other attributes",
            ));
        }
        None if !accepts_incomplete => {
            return Err(OsbError::async_required("provisioning a service instance"));
        }
        _ => {}
    }
    // A first request, or the same one again: then its first operation, as the idempotency record kept it.
    let command = provision_command(&state, id, &project, offering, &plan.name, parameters)?;
    let written = run(
        &state,
        &headers,
        &project,
        OperationKind::Provision,
        id,
        None,
        Some(key),
        [Method::PUT.as_str().as_bytes(), path.as_bytes(), fingerprint.as_bytes()],
        &actor,
        command,
        Request::Provision,
    )
    .await;
    let Some(existing) = existing else { return Ok(accepted(written?.operation.id)) };
    match written {
        Ok(written) if matches!(written.operation.state, OperationStatus::Succeeded) => Ok(ok()),
        Ok(written) if accepts_incomplete => Ok(accepted(written.operation.id)),
        Ok(_) => Err(OsbError::async_required("provisioning this service instance")),
        // The record is gone (it expires): the instance tells.
        Err(e) if e.status == StatusCode::CONFLICT && existing.provisioned() => Ok(ok()),
        Err(e) => Err(e),
    }
}

fn same_instance(
    existing: &Found,
    project: &str,
    offering: &ServiceOffering,
    plan: &str,
    parameters: &Parameters,
) -> bool {
    let spec = existing.view.spec();
    existing.project == project
        && existing.view.deprovisioning.is_none()
        && spec.service == offering.service
        && spec.plan == plan
        && parameters.version.as_ref().is_none_or(|v| *v == spec.version)
        && parameters.storage_gib.is_none_or(|s| s == spec.storage_gib)
        && parameters.config.iter().all(|(k, v)| spec.config.get(k) == v.as_ref())
}

fn provision_command(
    state: &AppState,
    id: Uuid,
    project: &str,
    offering: &ServiceOffering,
    plan: &str,
    parameters: Parameters,
) -> Result<InstanceCommand, OsbError> {
    let name = ids::instance_name(id);
    let clusters = state.clusters.placeable();
    let cluster = placement::place(&clusters, None, project, &name).ok_or_else(|| {
        OsbError::from_api(
            ApiError::Unavailable("no cluster is registered; ask an operator to register one".into()),
            Request::Provision,
        )
    })?;
    let version = parameters.version.unwrap_or_else(|| newest_version(offering).to_owned());
    let mut command =
        ProvisionInstance::new(id, project, name, offering.service, version, plan, cluster.name.clone());
    command.storage_gib = parameters.storage_gib;
    command.config = parameters.config.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    command.description = "provisioned through the Open Service Broker API".into();
    Ok(InstanceCommand::Provision(command))
}

/// Fetches a Service Instance (spec *Fetching a Service Instance*): 404 while it is being provisioned,
/// 422 `ConcurrencyError` while it is being updated.
pub(super) async fn fetch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath(platform_id): OsbPath<String>,
) -> Result<Response, OsbError> {
    let id = ids::instance_id(&platform_id);
    let found = lookup::find_for(&state, &principal, id, Role::Viewer).await?;
    let Some(found) = found.filter(|f| f.provisioned() && !f.view.removed) else {
        return Err(OsbError::not_found("no such service instance (or it is still being provisioned)"));
    };
    if found.busy() {
        return Err(OsbError::concurrency(
            "the service instance is being changed; fetch it once the operation ends",
        ));
    }
    let spec = found.view.spec();
    let mut parameters = serde_json::Map::new();
    parameters.insert("version".into(), json!(spec.version));
    parameters.insert("storage_gib".into(), json!(spec.storage_gib));
    for (key, value) in wire::config_json(&spec.config) {
        parameters.insert(key, value);
    }
    Ok(Json(json!({
        "service_id": ids::service_id(spec.service),
        "plan_id": ids::plan_id(spec.service, &spec.plan),
        "parameters": parameters,
        "maintenance_info": {
            "version": ids::maintenance_version(&spec.version),
            "description": format!("{} {}", spec.service, spec.version),
        },
    }))
    .into_response())
}

/// Updates a Service Instance (spec *Updating a Service Instance*): a plan, parameters, or, with the
/// catalog's newer `maintenance_info`, an upgrade to the version it names. A request that changes nothing
/// is 200; a change while another operation runs is 422 `ConcurrencyError`, and so is one that loses a
/// race with another writer (the command is guarded by the version it was checked against).
pub(super) async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath(platform_id): OsbPath<String>,
    query: body::Query,
    headers: HeaderMap,
    Raw(raw): Raw,
) -> Result<Response, OsbError> {
    let accepts_incomplete = query.accepts_incomplete()?;
    let request: UpdateBody = body::json(&headers, &raw, Request::Update)?;
    let id = ids::instance_id(&platform_id);
    let Some(found) =
        lookup::find_for(&state, &principal, id, Role::Editor).await?.filter(|f| !f.view.removed)
    else {
        return Err(OsbError::no_such_instance());
    };
    let spec = found.view.spec().clone();
    let catalog = state.catalog();
    let (offering, plan) = resolve(catalog, &request.service_id, request.plan_id.as_deref())?;
    if offering.service != spec.service {
        return Err(OsbError::bad_request(format!(
            "service_id names {}, the service instance is {}",
            offering.service, spec.service
        )));
    }
    let context_platform = request.context.as_ref().and_then(|c| c.get("platform")).and_then(Value::as_str);
    let actor = acting(&principal, &headers, context_platform)?;
    let upgrade_to = check_maintenance_info(request.maintenance_info.as_ref(), offering)?
        .then(|| newest_version(offering).to_owned())
        .filter(|newest| *newest != spec.version);
    let parameters = body::parameters(request.parameters.as_ref(), offering, false)?;
    let plan = plan.map(|p| p.name.clone()).filter(|p| *p != spec.plan);
    // A parameter needing a restart, changed outside the maintenance window, is held for it (its value is
    // in the pending maintenance, not yet in the configuration): what the instance is to become.
    let config = spec.pending_maintenance.configuration.as_ref().map_or(&spec.config, |held| &held.config);
    let changes = upgrade_to.is_some()
        || plan.is_some()
        || parameters.storage_gib.is_some_and(|s| s != spec.storage_gib)
        || parameters.config.iter().any(|(k, v)| config.get(k) != v.as_ref());
    if found.view.deprovisioning.is_some() {
        return Err(OsbError::concurrency("the service instance is being deleted"));
    }
    if !changes {
        if found.busy() {
            // What this asks is what the instance is already on its way to: a re-sent PATCH (spec: 202,
            // not 200, until the update completed), answered with the operation under way.
            if let Some(operation) = lookup::last_command(&state, &found.project, id).await? {
                return if accepts_incomplete {
                    Ok(accepted(operation))
                } else {
                    Err(OsbError::async_required("updating this service instance"))
                };
            }
        }
        return Ok(ok());
    }
    if found.busy() {
        return Err(OsbError::concurrency("another operation for this service instance is in progress"));
    }
    if !accepts_incomplete {
        return Err(OsbError::async_required("updating a service instance"));
    }
    let command = InstanceCommand::Update(UpdateInstance {
        version: upgrade_to,
        plan,
        storage_gib: parameters.storage_gib,
        config: (!parameters.config.is_empty()).then_some(parameters.config),
        description: None,
        deletion_protection: None,
        maintenance_window: None,
        now: Some(chrono::Utc::now()),
    });
    let path = format!("/v2/service_instances/{platform_id}");
    let written = run(
        &state,
        &headers,
        &found.project,
        OperationKind::Update,
        id,
        Some(found.view.version),
        None,
        [Method::PATCH.as_str().as_bytes(), path.as_bytes(), &raw],
        &actor,
        command,
        Request::Update,
    )
    .await?;
    if matches!(written.operation.state, OperationStatus::Succeeded) {
        return Ok(ok());
    }
    Ok(accepted(written.operation.id))
}

/// Deprovisions a Service Instance (spec *Deprovisioning*): 410 when there is none (or it is gone); a
/// repeated DELETE answers with the first one's operation.
pub(super) async fn deprovision(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    OsbPath(platform_id): OsbPath<String>,
    query: body::Query,
    headers: HeaderMap,
) -> Result<Response, OsbError> {
    let accepts_incomplete = query.accepts_incomplete()?;
    let service_id = body::Query::required(&query.service_id, "service_id")?;
    let plan_id = body::Query::required(&query.plan_id, "plan_id")?;
    let id = ids::instance_id(&platform_id);
    let Some(found) =
        lookup::find_for(&state, &principal, id, Role::Editor).await?.filter(|f| !f.view.removed)
    else {
        return Err(OsbError::gone("service instance"));
    };
    let spec = found.view.spec();
    if service_id != ids::service_id(spec.service) || plan_id != ids::plan_id(spec.service, &spec.plan) {
        return Err(OsbError::bad_request(
            "service_id and plan_id must be the service instance's (its service and current plan)",
        ));
    }
    if !accepts_incomplete {
        return Err(OsbError::async_required("deprovisioning a service instance"));
    }
    let actor = acting(&principal, &headers, None)?;
    let path = format!("/v2/service_instances/{platform_id}");
    let written = run(
        &state,
        &headers,
        &found.project,
        OperationKind::Deprovision,
        id,
        Some(found.view.version),
        None,
        [Method::DELETE.as_str().as_bytes(), path.as_bytes(), b""],
        &actor,
        InstanceCommand::Deprovision,
        Request::Deprovision,
    )
    .await;
    match written {
        Ok(written) => Ok(accepted(written.operation.id)),
        // Deprovisioning already: the version moved only if another writer got there first; the
        // repeated request answers with the operation that started it.
        Err(e) if e.error == "ConcurrencyError" && found.view.deprovisioning.is_some() => {
            let first = found.view.deprovision_operation.ok_or(e)?;
            Ok(accepted(first))
        }
        Err(e) => Err(e),
    }
}

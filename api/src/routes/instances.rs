//! Instances: provision, read, list, update, deprovision.

use crate::dto::Convert;
use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, ProvisionInstance, UpdateInstance, instance::check_dns_label, placement};
use projections::{InstanceView, OperationKind};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::write::{self, Write};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{Health, Instance, InstanceList, Operation, ProvisionRequest, UpdateRequest, config_value},
    error::Problem,
    extract::{JsonBody, etag, if_match},
};

pub(super) fn instance_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("instance"))
}

/// The instance a route's `{project}` and `{id}` name, as of every write acknowledged before the request
/// (read from the stream, not the read models); 404 when there is none.
pub(super) async fn current_instance(
    state: &AppState,
    project: &str,
    id: &str,
) -> Result<(Uuid, streams::Current<domain::Instance>), ApiError> {
    check_dns_label("project", project)?;
    let id = instance_id(id)?;
    let current = state.commands.read_current(project, id).await?.ok_or(ApiError::NotFound("instance"))?;
    Ok((id, current))
}

/// Provisions an instance.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project, a DNS-1123 label"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe: the same key and body returns the first operation"),
    ),
    request_body = ProvisionRequest,
    responses(
        (status = 202, description = "accepted; poll the operation in `Location`", body = Operation,
            headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "name taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(project): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<ProvisionRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let request = body.value;
    let config = request
        .config
        .iter()
        .map(|(k, v)| Ok((k.clone(), config_value(k, v)?)))
        .collect::<Result<_, ApiError>>()?;
    // Cordoned and draining clusters take no new instance (`streams::clusters`).
    let clusters = state.clusters.placeable();
    let cluster = match &request.cluster {
        Some(name) => clusters.iter().find(|c| c.name == *name).ok_or_else(|| {
            if state.clusters.list().iter().any(|c| c.name == *name) {
                ApiError::field(
                    "/cluster",
                    "cluster_not_cordoned",
                    format!("cluster {name:?} is cordoned: it takes no new instances"),
                )
            } else {
                ApiError::field(
                    "/cluster",
                    "registered_cluster",
                    format!("no cluster {name:?} is registered"),
                )
            }
        })?,
        None => placement::place(&clusters, request.region.as_deref(), &project, &request.name).ok_or_else(
            || match &request.region {
                Some(region) => ApiError::field(
                    "/region",
                    "registered_region",
                    format!("no cluster taking new instances is registered in {region:?}"),
                ),
                None => {
                    ApiError::Unavailable("no cluster is registered; ask an operator to register one".into())
                }
            },
        )?,
    };
    let restore = match &request.restore_from {
        Some(from) => Some(super::restore::start_from(&state, &project, from)?),
        None => None,
    };
    let id = Uuid::now_v7();
    let command = InstanceCommand::Provision(ProvisionInstance {
        instance_id: id,
        project: project.clone(),
        name: request.name,
        service: request.service.into(),
        version: request.version,
        plan: request.plan,
        storage_gib: request.storage_gib,
        config,
        description: request.description,
        deletion_protection: request.deletion_protection,
        cluster: cluster.name.clone(),
        acl: request.acl.into_iter().map(Into::into).collect(),
        allow_public: request.allow_public,
        restore,
        maintenance_window: request.maintenance_window.map(Into::into),
    });
    let write = Write {
        project: &project,
        kind: OperationKind::Provision,
        instance_id: id,
        expected_version: None,
        headers: &headers,
        fingerprint: [Method::POST.as_str().as_bytes(), uri.path().as_bytes(), &body.raw],
        actor: &principal,
    };
    write::execute(&state, write, command).await
}

/// Query of the instance list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    /// page size, 1 to 500 (default 100)
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_page_token` of the previous page
    #[param(format = Uuid)]
    page_token: Option<String>,
    /// only the instance with this name (a DNS-1123 label)
    #[param(min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]
    name: Option<String>,
    /// only instances in this state
    #[param(value_type = Option<crate::dto::Health>)]
    state: Option<crate::dto::Health>,
}

/// Lists a project's instances in creation order.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ListParams,
        ("Cp-Min-Sequence" = Option<u64>, Header, description = "read-your-writes: the Cp-Stream-Sequence of a write; the read waits until it is visible (503 after 5 s)")),
    responses(
        (status = 200, body = InstanceList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_instances(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<InstanceList>, ApiError> {
    check_dns_label("project", &project)?;
    write::read_your_writes(&state, &headers).await?;
    let Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        detail: e.body_text(),
        errors: vec![],
    })?;
    if let Some(name) = &params.name
        && check_dns_label("name", name).is_err()
    {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            detail: "name must be a DNS-1123 label".into(),
            errors: vec![crate::error::FieldError {
                field: "name".into(),
                rule: "dns1123_label".into(),
                detail:
                    "1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
                        .into(),
            }],
        });
    }
    let (limit, after) = crate::extract::page(params.limit, params.page_token.as_deref())?;
    let model = state.read_models.read();
    let shown = |view: &InstanceView| crate::liveness::shown(Instance::convert(view), &state.liveness);
    let name = params.name.as_deref();
    // One extra tells whether another page follows.
    let mut page: Vec<Instance> = match params.state {
        // While a cluster is silent, what is shown is not what was folded: filter what is shown.
        Some(wanted) if wanted == Health::Unknown || state.liveness.any_unreachable() => model
            .list(&project, after, usize::MAX, name, None)
            .into_iter()
            .map(shown)
            .filter(|i| i.status.state == wanted)
            .take(limit + 1)
            .collect(),
        wanted => model
            .list(&project, after, limit + 1, name, wanted.map(Convert::convert))
            .into_iter()
            .map(shown)
            .collect(),
    };
    let next_page_token = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|i| i.id.to_string()).unwrap_or_default()
    });
    Ok(Json(InstanceList { items: page, next_page_token }))
}

/// Gets an instance: its full desired specification plus computed fields.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id"),
        ("Cp-Min-Sequence" = Option<u64>, Header, description = "read-your-writes: the Cp-Stream-Sequence of a write; the read waits until it is visible (503 after 5 s)"),
        crate::dto::InstanceParams),
    responses(
        (status = 200, description = "desired state as of every write acknowledged before the request; status and observed state from the read models. With `as_of`: the instance as it was then (desired and observed), without an ETag",
            body = Instance, headers(("ETag" = String, description = "instance version"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such instance (with `as_of`: not yet then)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "with `as_of`: the caller runs as many history reads as it may", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, raw_id)): Path<(String, String)>,
    query: Result<axum::extract::Query<crate::dto::InstanceParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&raw_id)?;
    let axum::extract::Query(params) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        detail: e.body_text(),
        errors: vec![],
    })?;
    if let Some(at) = params.as_of {
        let _reading = state.limits.history_reads.acquire(&principal)?;
        let then = super::history::state_as_of(&state, &project, &raw_id, at).await?;
        return Ok(Json(then.ok_or(ApiError::NotFound("instance"))?).into_response());
    }
    write::read_your_writes(&state, &headers).await?;
    // Desired state and ETag as of every write acknowledged before the request, so that a GET → PATCH
    // with If-Match never builds on a version older than the client's own last write. When the read
    // models cover the whole stream as it is now, their record is that version; otherwise the stream is
    // read (a direct get: at 100,000 instances it may have to load a block of the file store, which made
    // its p99 ~190 ms against ~3 ms for the stream's state).
    if let Ok(info) = state.events.get_info().await {
        let model = state.read_models.read();
        if model.last_sequence() >= info.state.last_sequence {
            let view = model.instance(&project, id).ok_or(ApiError::NotFound("instance"))?;
            let shown = crate::liveness::shown(Instance::convert(view), &state.liveness);
            return Ok(([(header::ETAG, etag(view.version))], Json(shown)).into_response());
        }
    }
    let current = state.commands.read_current(&project, id).await?.ok_or(ApiError::NotFound("instance"))?;
    let view = {
        let model = state.read_models.read();
        let updated_at = current.updated_at.unwrap_or_else(chrono::Utc::now);
        let instance = domain::Instance::clone(&current.aggregate);
        InstanceView::with_desired(model.instance(&project, id), instance, current.version, updated_at)
    };
    let shown = crate::liveness::shown(Instance::convert(&view), &state.liveness);
    Ok(([(header::ETAG, etag(current.version))], Json(shown)).into_response())
}

/// Changes an instance (JSON merge patch).
#[utoipa::path(
    patch,
    path = "/v1/projects/{project}/instances/{id}",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on; 412 when the instance moved"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body(content = UpdateRequest, content_type = "application/merge-patch+json"),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn update_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<UpdateRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let expected_version = if_match(&headers)?;
    let request = body.value;
    request.check_immutable()?;
    if request.deletion_protection == Some(false) {
        principal.require_admin(&project, "turning deletion protection off")?;
    }
    let config = match &request.config {
        Some(changes) => Some(
            changes
                .iter()
                .map(|(k, v)| Ok((k.clone(), if v.is_null() { None } else { Some(config_value(k, v)?) })))
                .collect::<Result<BTreeMap<_, _>, ApiError>>()?,
        ),
        None => None,
    };
    let command = InstanceCommand::Update(UpdateInstance {
        version: request.version,
        plan: request.plan,
        storage_gib: request.storage_gib,
        config,
        description: request.description,
        deletion_protection: request.deletion_protection,
        maintenance_window: request.maintenance_window.map(Into::into),
        now: Some(chrono::Utc::now()),
    });
    let write = Write {
        project: &project,
        kind: OperationKind::Update,
        instance_id: id,
        expected_version,
        headers: &headers,
        fingerprint: [Method::PATCH.as_str().as_bytes(), uri.path().as_bytes(), &body.raw],
        actor: &principal,
    };
    write::execute(&state, write, command).await
}

/// Deprovisions an instance. Repeating it answers with the operation that started it.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "deletion protection is on", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let write = Write {
        project: &project,
        kind: OperationKind::Deprovision,
        instance_id: id,
        expected_version: if_match(&headers)?,
        headers: &headers,
        fingerprint: [Method::DELETE.as_str().as_bytes(), uri.path().as_bytes(), b""],
        actor: &principal,
    };
    write::execute(&state, write, InstanceCommand::Deprovision).await
}

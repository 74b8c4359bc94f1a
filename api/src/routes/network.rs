//! Network access: an instance's ACL. Every change is an instance command (guarded by the instance's
//! ETag) and an operation that completes when the cluster enforces the new set, whatever else is
//! rolling out.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, instance::check_dns_label};
use projections::OperationKind;

use super::{
    instances::{current_instance, instance_id},
    write,
};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{Acl, AclAddRequest, AclEntry, AclReplaceRequest, Operation},
    error::Problem,
    extract::{JsonBody, etag},
};

/// Gets an instance's ACL.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/acl",
    tag = "network access",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id")),
    responses(
        (status = 200, description = "the ACL as of every write acknowledged before the request", body = Acl,
            headers(("ETag" = String, description = "instance version"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_acl(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, current) = current_instance(&state, &project, &id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    let acl =
        Acl { entries: spec.acl.iter().map(AclEntry::from).collect(), instance_version: current.version };
    Ok(([(header::ETAG, etag(current.version))], Json(acl)).into_response())
}

/// Replaces an instance's whole ACL. The same set in another order changes nothing: no event, the
/// operation is done at once and the ETag stays.
#[utoipa::path(
    put,
    path = "/v1/projects/{project}/instances/{id}/acl",
    tag = "network access",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on; 412 when the instance moved"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = AclReplaceRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "an entry breaks a rule; each is named", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn replace_acl(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<AclReplaceRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let request = body.value;
    let entries: Vec<domain::instance::AclEntry> = request.entries.into_iter().map(Into::into).collect();
    // Checked before the write, so a bad set is a 422 whatever the If-Match says.
    domain::instance::check_acl(&entries, "/entries", request.allow_public)?;
    let command = InstanceCommand::ReplaceAcl { entries, allow_public: request.allow_public };
    let fingerprint = [Method::PUT.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    write::change(&state, &principal, &project, id, &headers, OperationKind::Update, fingerprint, command)
        .await
}

/// Adds one entry to an instance's ACL (an entry with the same CIDR gets the new description; the same
/// entry again changes nothing).
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/acl",
    tag = "network access",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = AclAddRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn add_acl_entry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<AclAddRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let request = body.value;
    let entry = domain::instance::AclEntry::new(request.cidr, request.description);
    domain::instance::check_acl_entry(&entry, "", request.allow_public)?;
    let command = InstanceCommand::AddAclEntry { entry, allow_public: request.allow_public };
    let fingerprint = [Method::POST.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    write::change(&state, &principal, &project, id, &headers, OperationKind::Update, fingerprint, command)
        .await
}

/// Removes one entry from an instance's ACL. The entry is named by its CIDR with the `/` percent-encoded
/// (`…/acl/203.0.113.0%2F24`).
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}/acl/{cidr}",
    tag = "network access",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("cidr" = String, Path, description = "the entry's CIDR, `/` percent-encoded as %2F"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, description = "no such instance or entry", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn remove_acl_entry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, cidr)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let fingerprint = [Method::DELETE.as_str().as_bytes(), uri.path().as_bytes(), b""];
    let command = InstanceCommand::RemoveAclEntry { cidr };
    write::change(&state, &principal, &project, id, &headers, OperationKind::Update, fingerprint, command)
        .await
}

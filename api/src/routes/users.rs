//! Users of an instance (issue 27): per-application database users with a role from the service's
//! catalog. Every change is an instance command (guarded by the instance's ETag, made safe to retry by an
//! Idempotency-Key) and an operation that completes when the engine reports the users applied. A user's
//! password is made in the cluster and read from there (`…/users/{name}/credentials`, like the instance's
//! own credentials): no event, read model or log holds it.
//!
//! The commands behind these routes (`InstanceCommand::CreateUser`, `DeleteUser`,
//! `RotateUserPassword`) are the only way to change users; another edge (the Open Service Broker facade's
//! bindings) runs the same commands, with the same operation kinds (`create_user`, `delete_user`,
//! `rotate_user_password`).

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, Lifecycle, instance::check_dns_label, instance::users};
use projections::OperationKind;

use super::{
    credentials,
    instances::{current_instance, instance_id},
    write,
};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{Credentials, Operation, User, UserList, UserRequest, UserState},
    error::Problem,
    extract::{JsonBody, etag},
};

fn state_of(state: projections::UserState) -> UserState {
    match state {
        projections::UserState::Applied => UserState::Applied,
        projections::UserState::Pending => UserState::Pending,
        projections::UserState::Error => UserState::Error,
    }
}

/// The users of the instance as of every write acknowledged before the request, with their state as its
/// cluster last reported it.
async fn users_of(state: &AppState, project: &str, id: &str) -> Result<UserList, ApiError> {
    let (id, current) = current_instance(state, project, id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    let observed = state.read_models.read().instance(project, id).and_then(|v| v.observed.clone());
    let users = projections::user_views(&spec.users, observed.as_ref())
        .into_iter()
        .map(|u| User { name: u.name, role: u.role, state: state_of(u.state), reason: u.reason })
        .collect();
    Ok(UserList { users, instance_version: current.version })
}

/// Lists an instance's users.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/users",
    tag = "users",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id")),
    responses(
        (status = 200, description = "the users, sorted by name", body = UserList,
            headers(("ETag" = String, description = "instance version"))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let list = users_of(&state, &project, &id).await?;
    Ok(([(header::ETAG, etag(list.instance_version))], Json(list)).into_response())
}

/// Creates a user with a role from the service's catalog. Its password is made in the cluster; read it
/// with `GET …/users/{name}/credentials` once the operation succeeded.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/users",
    tag = "users",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on; 412 when the instance moved"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    request_body = UserRequest,
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "a user of that name exists, or the instance is being deprovisioned",
            body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the name or the role breaks a rule (`user_name`, `user_name_reserved`, `offered_role`), \
            or the service has no users yet (`users_supported`); each is named",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<UserRequest>,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let request = body.value;
    // Checked before the write, so a bad name is a 422 whatever the If-Match says.
    users::check_name("/name", &request.name)?;
    let command = InstanceCommand::CreateUser { name: request.name, role: request.role };
    let fingerprint = [Method::POST.as_str().as_bytes(), uri.path().as_bytes(), &body.raw];
    write::change(&state, &principal, &project, id, &headers, OperationKind::CreateUser, fingerprint, command)
        .await
}

/// Gets one user of an instance.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/users/{name}",
    tag = "users",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("name" = String, Path, description = "the user's name"),
    ),
    responses(
        (status = 200, body = User, headers(("ETag" = String, description = "instance version"))),
        (status = 404, description = "no such instance or user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_user(
    State(state): State<AppState>,
    Path((project, id, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let list = users_of(&state, &project, &id).await?;
    let user = list.users.into_iter().find(|u| u.name == name).ok_or(ApiError::NotFound("user"))?;
    Ok(([(header::ETAG, etag(list.instance_version))], Json(user)).into_response())
}

/// Deletes a user: the engine revokes it (for PostgreSQL the role is dropped), and its password goes.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/instances/{id}/users/{name}",
    tag = "users",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("name" = String, Path, description = "the user's name"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, description = "no such instance or user", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, name)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let fingerprint = [Method::DELETE.as_str().as_bytes(), uri.path().as_bytes(), b""];
    let command = InstanceCommand::DeleteUser { name };
    write::change(&state, &principal, &project, id, &headers, OperationKind::DeleteUser, fingerprint, command)
        .await
}

/// Gives a user a new password, made in the cluster. Until the operation succeeded the credentials read
/// may already be the new ones while the engine still takes the old; once it succeeded only the new one
/// works.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/users/{name}/password/rotate",
    tag = "users",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("name" = String, Path, description = "the user's name"),
        ("If-Match" = Option<String>, Header, description = "ETag the rotation is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, description = "no such instance or user", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn rotate_user_password(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id, name)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let command = InstanceCommand::RotateUserPassword { name };
    write::action(
        &state,
        &principal,
        &project,
        id,
        uri.path(),
        &headers,
        OperationKind::RotateUserPassword,
        command,
    )
    .await
}

/// Gets the credentials of a user, read from the instance's cluster now (its password never leaves the
/// cluster otherwise).
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/users/{name}/credentials",
    tag = "users",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("name" = String, Path, description = "the user's name"),
    ),
    responses(
        (status = 200, description = "the user's credentials; `Cache-Control: no-store`", body = Credentials),
        (status = 404, description = "no such instance or user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the cluster has not made the user's password yet, or the instance is being deprovisioned",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the cluster's agent did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_user_credentials(
    State(state): State<AppState>,
    Path((project, id, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (id, current) = current_instance(&state, &project, &id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    if !spec.users.iter().any(|u| u.name == name) {
        return Err(ApiError::NotFound("user"));
    }
    if current.aggregate.lifecycle() != Lifecycle::Active {
        return Err(ApiError::Conflict {
            code: "credentials_not_ready",
            detail: "the instance is being deprovisioned".into(),
            errors: vec![],
            retry_after: None,
        });
    }
    credentials::fetch(&state, &project, id, spec, Some(name)).await
}

//! An instance's connection credentials, fetched from its cluster's agent at request time
//! (`streams::credentials`): the API keeps no copy and logs none.

use std::time::Duration;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, Uri, header},
    response::{IntoResponse, Response},
};
use domain::{InstanceCommand, Lifecycle, OperationKind, instance::check_dns_label};
use streams::credentials::{CredentialsReply, CredentialsRequest, SealedReply, request_subject};

use super::{
    instances::{current_instance, instance_id},
    write,
};
use crate::{
    ApiError, AppState,
    auth::Principal,
    dto::{Credentials, Operation},
    error::Problem,
};

/// How long the cluster's agent may take to answer.
const AGENT_WAIT: Duration = Duration::from_secs(5);

/// Gets the credentials to connect to an instance, read from its cluster now.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/instances/{id}/credentials",
    tag = "instances",
    params(("project" = String, Path, description = "project"), ("id" = String, Path, description = "instance id")),
    responses(
        (status = 200, description = "the credentials; `Cache-Control: no-store`", body = Credentials),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the cluster has no credentials for it yet (still provisioning, or being deprovisioned)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the cluster's agent did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_credentials(
    State(state): State<AppState>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, current) = current_instance(&state, &project, &id).await?;
    let spec = current.aggregate.spec().ok_or(ApiError::NotFound("instance"))?;
    let not_ready = |detail: String| ApiError::Conflict {
        code: "credentials_not_ready",
        detail,
        errors: vec![],
        retry_after: Some(5),
    };
    if current.aggregate.lifecycle() != Lifecycle::Active {
        return Err(not_ready("the instance is being deprovisioned".into()));
    }
    fetch(&state, &project, id, spec, None).await
}

/// Asks the agent of `spec`'s cluster for the credentials of instance `id` (of user `user`, when given),
/// and answers them with `Cache-Control: no-store`: read from the cluster now, never kept or logged here.
pub(crate) async fn fetch(
    state: &AppState,
    project: &str,
    id: uuid::Uuid,
    spec: &domain::instance::InstanceSpec,
    user: Option<String>,
) -> Result<Response, ApiError> {
    let not_ready = |detail: String| ApiError::Conflict {
        code: "credentials_not_ready",
        detail,
        errors: vec![],
        retry_after: Some(5),
    };
    // The answer comes sealed to a key made for this request only (`streams::credentials`).
    let reply_key = nkeys::XKey::new();
    let request = CredentialsRequest {
        project: project.to_owned(),
        instance_id: id,
        name: spec.name.clone(),
        service: spec.service.as_str().to_owned(),
        reply_key: reply_key.public_key(),
        user: user.clone(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?;
    let unreachable = |why: &str| {
        ApiError::Unavailable(format!("the agent of cluster {} did not answer ({why}); retry", spec.cluster))
    };
    let reply = match tokio::time::timeout(
        AGENT_WAIT,
        state.nats.request(request_subject(&spec.cluster), body.into()),
    )
    .await
    {
        Err(_) => return Err(unreachable(&format!("nothing within {AGENT_WAIT:?}"))),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(unreachable("it is not connected"));
        }
        Ok(Err(e)) => return Err(unreachable(&e.to_string())),
        Ok(Ok(reply)) => reply,
    };
    let opened = serde_json::from_slice::<SealedReply>(&reply.payload)
        .map_err(|e| e.to_string())
        .and_then(|sealed| sealed.open(&reply_key).map_err(|e| e.to_string()));
    match opened {
        // An agent of a build without users answers a user's request with the instance's own
        // credentials: never passed off as the user's.
        Ok(CredentialsReply::Found { username, .. }) if user.as_ref().is_some_and(|u| *u != username) => {
            Err(not_ready("the cluster's agent does not know users yet; retry once it is upgraded".into()))
        }
        Ok(CredentialsReply::Found { username, password, host, port }) => {
            let credentials = Credentials { username, password, host, port };
            Ok(([(header::CACHE_CONTROL, "no-store")], Json(credentials)).into_response())
        }
        Ok(CredentialsReply::NotReady { reason }) => Err(not_ready(reason)),
        Err(e) => Err(ApiError::Internal(format!("the agent's answer is not one: {e}"))),
    }
}

/// Replaces the instance's generated password with a new one. The service accepts only the new password
/// once the operation succeeded; until then the credentials read are the old ones, which still work. The
/// password is made in the cluster: no event and no response carries it.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/instances/{id}/credentials/rotate",
    tag = "instances",
    params(
        ("project" = String, Path, description = "project"),
        ("id" = String, Path, description = "instance id"),
        ("If-Match" = Option<String>, Header, description = "ETag the rotation is based on"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe"),
    ),
    responses(
        (status = 202, body = Operation, headers(("Location" = String), ("ETag" = String), ("Retry-After" = u32))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the instance is being deprovisioned", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn rotate_credentials(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_dns_label("project", &project)?;
    let id = instance_id(&id)?;
    let command = InstanceCommand::RotateCredentials;
    write::action(
        &state,
        &principal,
        &project,
        id,
        uri.path(),
        &headers,
        OperationKind::RotateCredentials,
        command,
    )
    .await
}

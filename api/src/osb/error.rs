//! The broker's error body (OSB v2.17 *Service Broker Errors*): `{"error": "<CamelCaseWord>",
//! "description": "<what went wrong>"}` with `application/json`, never the `/v1` API's problem+json. The
//! spec's own codes (*Error Codes*: `AsyncRequired`, `ConcurrencyError`, `MaintenanceInfoConflict`,
//! `RequiresApp`) are used for exactly their conditions; other conditions carry the `/v1` problem code
//! in CamelCase (`validation_failed` → `ValidationFailed`) so a platform's operator can find it there.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::ApiError;

/// One refusal of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsbError {
    /// HTTP status
    #[serde(skip)]
    pub status: StatusCode,
    /// a single CamelCase word naming the condition
    pub error: String,
    /// for people: what was wrong, naming the field and the rule
    pub description: String,
}

/// Which request failed: the spec gives each its own statuses for the same condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `PUT /v2/service_instances/:id` (*Provisioning*)
    Provision,
    /// `PATCH /v2/service_instances/:id` (*Updating a Service Instance*)
    Update,
    /// `DELETE /v2/service_instances/:id` (*Deprovisioning*)
    Deprovision,
    /// `PUT …/service_bindings/:id` (*Binding*)
    Bind,
    /// `DELETE …/service_bindings/:id` (*Unbinding*)
    Unbind,
    /// a `GET`
    Read,
}

impl OsbError {
    fn new(status: StatusCode, error: &str, description: impl Into<String>) -> Self {
        Self { status, error: error.to_owned(), description: description.into() }
    }

    /// 400: malformed, or missing or invalid data (every request's *Response* table).
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", description)
    }

    /// 422 `AsyncRequired` (spec *Asynchronous Operations*): the broker only works asynchronously.
    pub fn async_required(what: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AsyncRequired",
            format!("{what} is carried out asynchronously: repeat the request with accepts_incomplete=true"),
        )
    }

    /// 422 `ConcurrencyError` (spec *Blocking Operations*).
    pub fn concurrency(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError", description)
    }

    /// 422 `MaintenanceInfoConflict` (spec *Provisioning* and *Updating a Service Instance*, 422).
    pub fn maintenance_info_conflict(asked: &str, offered: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "MaintenanceInfoConflict",
            format!(
                "maintenance_info.version {asked:?} is not the plan's in the catalog ({offered:?}): the \
                 maintenance information for the requested Service Plan has changed; fetch the catalog again"
            ),
        )
    }

    /// 409: the resource exists with other attributes (spec *Provisioning*, *Binding*).
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", description)
    }

    /// 410: the resource does not exist (spec *Deprovisioning*, *Unbinding*; *Polling Last Operation*
    /// after an asynchronous delete).
    pub fn gone(what: &str) -> Self {
        Self::new(StatusCode::GONE, "Gone", format!("no such {what}"))
    }

    /// 404.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", description)
    }

    /// 422 for a request about an instance that does not exist where the spec has no 404 (update, bind).
    pub fn no_such_instance() -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "InstanceDoesNotExist", "no such service instance")
    }

    /// 401 (spec *Platform to Service Broker Authentication*).
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", description)
    }

    /// 403: authenticated, but without the role the request needs in its project.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", description)
    }

    /// 412 (spec *API Version Header*).
    pub fn unsupported_version(description: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "UnsupportedApiVersion", description)
    }

    /// The same refusal of the `/v1` API, as the spec has `request` answer it.
    pub fn from_api(e: ApiError, request: Request) -> Self {
        let problem = e.problem();
        let mut description = problem.detail.clone();
        for field in &problem.errors {
            if !description.contains(&field.detail) {
                description.push_str(&format!("; {}: {} ({})", field.field, field.detail, field.rule));
            }
        }
        let word = camel(&problem.code);
        let status = match &e {
            // A rule broken by valid JSON: 422 is what an update's spec says for "the requested change is
            // not supported"; provisioning and binding name 400 for invalid data.
            ApiError::Unprocessable { .. } if request == Request::Update => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unprocessable { .. } | ApiError::UnsupportedMediaType => StatusCode::BAD_REQUEST,
            // Another writer changed the instance between our read and our write.
            ApiError::Conflict { code: "concurrent_modification", .. }
            | ApiError::PreconditionFailed { .. } => {
                return Self::concurrency(format!(
                    "another operation changed this service instance at the same time: {description}"
                ));
            }
            ApiError::Conflict { .. } if matches!(request, Request::Provision | Request::Bind) => {
                StatusCode::CONFLICT
            }
            // Update, deprovision and unbind have no 409: the instance's state forbids it (422).
            ApiError::Conflict { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        Self { status, error: word, description }
    }
}

/// `snake_case` → `CamelCase`.
fn camel(code: &str) -> String {
    code.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

impl IntoResponse for OsbError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(&self)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="cp-osb""#));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(description = %self.description, "broker request failed: dependency unavailable");
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(description = %self.description, "broker request failed: internal error");
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_codes_become_camel_case_words() {
        assert_eq!(camel("validation_failed"), "ValidationFailed");
        assert_eq!(camel("name_taken"), "NameTaken");
    }

    #[test]
    fn a_concurrent_write_is_a_concurrency_error_whatever_the_request() {
        let e = OsbError::from_api(ApiError::PreconditionFailed { expected: 1, current: 2 }, Request::Update);
        assert_eq!((e.status, e.error.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "ConcurrencyError"));
    }

    #[test]
    fn invalid_data_is_400_when_provisioning_and_422_when_updating() {
        let invalid = || ApiError::field("/plan", "offered", "no such plan");
        assert_eq!(OsbError::from_api(invalid(), Request::Provision).status, StatusCode::BAD_REQUEST);
        assert_eq!(OsbError::from_api(invalid(), Request::Update).status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

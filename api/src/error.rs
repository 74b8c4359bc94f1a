//! The API's one error type, rendered as RFC 9457 `application/problem+json`.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use domain::InstanceError;
use streams::ExecuteError;

/// Base of every problem `type` URI; each problem's page is `<base><code>`.
pub const PROBLEM_BASE: &str = "https://docs.controlplane.example/problems/";

pub use wire::{FieldError, Problem};

/// Every way a request can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// the request is malformed (syntax, headers)
    #[error("{detail}")]
    BadRequest {
        /// problem code
        code: &'static str,
        /// description
        detail: String,
        /// fields at fault
        errors: Vec<FieldError>,
    },
    /// the request is well-formed but breaks a rule
    #[error("{detail}")]
    Unprocessable {
        /// problem code
        code: &'static str,
        /// description
        detail: String,
        /// fields at fault
        errors: Vec<FieldError>,
    },
    /// no valid credentials (the middleware adds the `WWW-Authenticate` challenge)
    #[error("{0}")]
    Unauthorized(String),
    /// authenticated, but the role is too weak
    #[error("{0}")]
    Forbidden(String),
    /// no such resource
    #[error("{0} not found")]
    NotFound(&'static str),
    /// the request conflicts with the resource's state
    #[error("{detail}")]
    Conflict {
        /// problem code
        code: &'static str,
        /// description
        detail: String,
        /// fields at fault
        errors: Vec<FieldError>,
        /// worth retrying after this many seconds
        retry_after: Option<u32>,
    },
    /// `If-Match` did not match the current version
    #[error("If-Match expected version {expected}, current version is {current}")]
    PreconditionFailed {
        /// version in If-Match
        expected: u64,
        /// current version
        current: u64,
    },
    /// the body is larger than the limit
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// the limit
        limit: usize,
    },
    /// the body is not JSON
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// the caller holds as many of something as it may (`crate::limits`)
    #[error("{detail}")]
    TooManyRequests {
        /// description
        detail: String,
        /// worth retrying after this many seconds
        retry_after: u32,
    },
    /// a dependency (NATS) is unreachable; retry later
    #[error("{0}")]
    Unavailable(String),
    /// a bug or corrupt data; details are logged, not shown
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, rule: impl Into<String>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let field = field.into();
        Self::Unprocessable {
            code: "validation_failed",
            detail: format!("{field}: {detail}"),
            errors: vec![FieldError { field, rule: rule.into(), detail }],
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, Vec<FieldError>) {
        match self {
            Self::BadRequest { code, errors, .. } => {
                (StatusCode::BAD_REQUEST, code, "Bad request", errors.clone())
            }
            Self::Unprocessable { code, errors, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, "Request breaks a rule", errors.clone())
            }
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized", vec![]),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", vec![]),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found", vec![]),
            Self::Conflict { code, errors, .. } => (StatusCode::CONFLICT, code, "Conflict", errors.clone()),
            Self::PreconditionFailed { .. } => {
                let error = FieldError {
                    field: "If-Match".into(),
                    rule: "current_version".into(),
                    detail: self.to_string(),
                };
                (StatusCode::PRECONDITION_FAILED, "version_mismatch", "Precondition failed", vec![error])
            }
            Self::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large", vec![])
            }
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                vec![],
            ),
            Self::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests", vec![])
            }
            Self::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service temporarily unavailable", vec![])
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", vec![]),
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let (status, code, title, errors) = self.parts();
        Problem {
            problem_type: format!("{PROBLEM_BASE}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let retry_after = match &self {
            Self::Unavailable(why) => {
                tracing::warn!(error = %why, "request failed: dependency unavailable");
                Some(1)
            }
            Self::Internal(why) => {
                tracing::error!(error = %why, "request failed: internal error");
                None
            }
            Self::Conflict { retry_after, .. } => *retry_after,
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<InstanceError> for ApiError {
    fn from(e: InstanceError) -> Self {
        match e {
            InstanceError::Invalid { field, rule, message } => Self::field(field, rule, message),
            InstanceError::InvalidFields(violations) => Self::Unprocessable {
                code: "validation_failed",
                detail: format!(
                    "{} fields break rules: {e_all}",
                    violations.len(),
                    e_all = violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>().join(", ")
                ),
                errors: violations
                    .into_iter()
                    .map(|v| FieldError { field: v.field, rule: v.rule.into(), detail: v.message })
                    .collect(),
            },
            InstanceError::NameTaken { name, holder } => Self::Conflict {
                code: "name_taken",
                detail: format!("the name {name:?} is used by instance {holder} in this project"),
                errors: vec![FieldError {
                    field: "/name".into(),
                    rule: "unique_in_project".into(),
                    detail: format!("{name:?} is taken"),
                }],
                retry_after: None,
            },
            InstanceError::NotFound => Self::NotFound("instance"),
            InstanceError::AclEntryNotFound { .. } => Self::NotFound("ACL entry"),
            InstanceError::ScheduleNotFound { .. } => Self::NotFound("backup schedule"),
            InstanceError::UserNotFound { .. } => Self::NotFound("user"),
            InstanceError::UserExists { ref name } => Self::Conflict {
                code: "user_exists",
                detail: e.to_string(),
                errors: vec![FieldError {
                    field: "/name".into(),
                    rule: "unique_user".into(),
                    detail: format!("the instance already has a user {name:?}; delete it first"),
                }],
                retry_after: None,
            },
            InstanceError::BackupNotRestorable { .. } => Self::Conflict {
                code: "backup_not_restorable",
                detail: e.to_string(),
                errors: vec![],
                retry_after: None,
            },
            InstanceError::AlreadyExists => Self::Conflict {
                code: "already_exists",
                detail: e.to_string(),
                errors: vec![],
                retry_after: None,
            },
            InstanceError::Deprovisioning => Self::Conflict {
                code: "instance_deprovisioning",
                detail: e.to_string(),
                errors: vec![],
                retry_after: None,
            },
            InstanceError::DeletionProtected => Self::Conflict {
                code: "deletion_protected",
                detail: e.to_string(),
                errors: vec![FieldError {
                    field: "/deletion_protection".into(),
                    rule: "disabled_before_delete".into(),
                    detail: "set deletion_protection to false with PATCH first".into(),
                }],
                retry_after: None,
            },
            InstanceError::Migrating { .. } => Self::Conflict {
                code: "instance_migrating",
                detail: e.to_string(),
                errors: vec![],
                retry_after: None,
            },
            InstanceError::NoSuchMigration { .. } => Self::Conflict {
                code: "no_such_migration",
                detail: e.to_string(),
                errors: vec![],
                retry_after: None,
            },
            InstanceError::RegistryUnavailable(why) => Self::Unavailable(why),
        }
    }
}

impl From<ExecuteError<InstanceError>> for ApiError {
    fn from(e: ExecuteError<InstanceError>) -> Self {
        match e {
            ExecuteError::Rejected(e) => e.into(),
            ExecuteError::VersionMismatch { expected, current } => {
                Self::PreconditionFailed { expected, current }
            }
            ExecuteError::Conflict => Self::Conflict {
                code: "concurrent_modification",
                detail: "the instance was changed concurrently by another writer; retry".into(),
                errors: vec![],
                retry_after: Some(1),
            },
            ExecuteError::Unavailable(why) => Self::Unavailable(format!(
                "event store unavailable ({why}); the change may or may not have been stored: retry with the \
                 same Idempotency-Key, or read the instance before retrying"
            )),
            ExecuteError::Corrupt(why) => Self::Internal(why),
        }
    }
}

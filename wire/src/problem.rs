//! The error body of every failed request: an RFC 9457 problem document.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One field that broke one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer of the field in the request body (`/config/max_connections`), or the header name
    pub field: String,
    /// machine name of the rule (`dns1123_label`, `no_downgrade`, `unknown_field`, …)
    pub rule: String,
    /// what is wrong, for people
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type
    #[serde(rename = "type")]
    pub problem_type: String,
    /// short summary of the problem type
    pub title: String,
    /// HTTP status
    pub status: u16,
    /// what happened in this occurrence
    pub detail: String,
    /// machine-readable problem code (the last segment of `type`)
    pub code: String,
    /// the fields at fault, if any
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl FieldError {
    /// A field that broke a rule.
    pub fn new(field: impl Into<String>, rule: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), rule: rule.into(), detail: detail.into() }
    }
}

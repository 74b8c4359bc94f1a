//! What platforms send: the request bodies and query strings of the instance routes, read with errors
//! that name the field, and the `parameters` object checked against the catalog (the same rules the plan's
//! `schemas` publish, `super::catalog::parameters`).

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request as HttpRequest},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use domain::{ConfigValue, catalog::ServiceOffering};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use super::error::{OsbError, Request};

/// `maintenance_info` of a request: only `version` counts ("Any field except for
/// `maintenance_info.version` will be ignored", spec *Provisioning*, *Body*).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct MaintenanceInfo {
    /// a semantic version
    pub(super) version: String,
}

/// `PUT /v2/service_instances/:instance_id` (spec *Provisioning*, *Body*). Unknown fields are ignored, as
/// the spec asks of receivers (*Vendor Extension Fields*).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ProvisionBody {
    /// the offering's id
    pub(super) service_id: String,
    /// the plan's id
    pub(super) plan_id: String,
    /// platform, and organization/space or namespace
    #[serde(default)]
    pub(super) context: Option<Value>,
    /// deprecated in favour of `context`
    #[serde(default)]
    pub(super) space_guid: Option<String>,
    /// the instance's parameters
    #[serde(default)]
    pub(super) parameters: Option<Value>,
    /// what the platform saw in the catalog
    #[serde(default)]
    pub(super) maintenance_info: Option<MaintenanceInfo>,
}

/// `PATCH /v2/service_instances/:instance_id` (spec *Updating a Service Instance*, *Body*).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct UpdateBody {
    /// the offering's id
    pub(super) service_id: String,
    /// the new plan's id; absent: the plan stays
    #[serde(default)]
    pub(super) plan_id: Option<String>,
    /// platform data; the catalog says `allow_context_updates: false`, so it changes nothing
    #[serde(default)]
    pub(super) context: Option<Value>,
    /// changed parameters; absent: none change
    #[serde(default)]
    pub(super) parameters: Option<Value>,
    /// the catalog's `maintenance_info` the platform asks for
    #[serde(default)]
    pub(super) maintenance_info: Option<MaintenanceInfo>,
}

/// A JSON object body (spec *Content Type*: `application/json`, or none, which a broker MAY still read;
/// anything else, or a body that does not parse, is 400).
pub(super) fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    raw: &Bytes,
    request: Request,
) -> Result<T, OsbError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
        if !essence.trim().eq_ignore_ascii_case("application/json") {
            return Err(OsbError::bad_request(format!(
                "Content-Type {essence:?}: the body must be application/json"
            )));
        }
    }
    if raw.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(OsbError::bad_request("the body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| OsbError::from_api(crate::extract::json_error(&e), request))
        .map_err(|mut e| {
            // A body that breaks the spec's own fields is malformed whatever the request (400).
            e.status = StatusCode::BAD_REQUEST;
            e
        })?;
    deserializer.end().map_err(|e| OsbError::bad_request(format!("the body has trailing data: {e}")))?;
    Ok(value)
}

/// The route's path parameters; one that does not decode is 400 in the broker's error body.
pub(super) struct OsbPath<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for OsbPath<T> {
    type Rejection = OsbError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, OsbError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| OsbError::bad_request(format!("the path does not decode: {}", e.body_text())))?;
        Ok(Self(value))
    }
}

/// The raw body; one larger than the API's limit is 413, one that cannot be read 400.
pub(super) struct Raw(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = OsbError;

    async fn from_request(request: HttpRequest, state: &S) -> Result<Self, OsbError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            let mut refused = OsbError::bad_request(format!("the body cannot be read: {}", e.body_text()));
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                refused.status = StatusCode::PAYLOAD_TOO_LARGE;
                refused.error = "PayloadTooLarge".into();
            }
            refused
        })?;
        Ok(Self(bytes))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = OsbError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, OsbError> {
        let axum::extract::Query(query) =
            axum::extract::Query::<Query>::try_from_uri(&parts.uri).map_err(|e| {
                OsbError::bad_request(format!("the query string does not decode: {}", e.body_text()))
            })?;
        Ok(query)
    }
}

/// `accepts_incomplete`, `service_id`, `plan_id` and `operation` of a query string (other fields are
/// ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Query {
    /// `true` when the platform takes asynchronous answers
    #[serde(default)]
    pub(super) accepts_incomplete: Option<String>,
    /// the offering's id
    #[serde(default)]
    pub(super) service_id: Option<String>,
    /// the plan's id
    #[serde(default)]
    pub(super) plan_id: Option<String>,
    /// an operation this broker returned
    #[serde(default)]
    pub(super) operation: Option<String>,
}

impl Query {
    /// Whether the platform accepts an asynchronous answer; a value other than `true` or `false` is 400.
    pub(super) fn accepts_incomplete(&self) -> Result<bool, OsbError> {
        match self.accepts_incomplete.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => {
                Err(OsbError::bad_request(format!("accepts_incomplete must be true or false, not {other:?}")))
            }
        }
    }

    /// A query field the request needs (spec *Deprovisioning*, *Unbinding*: `service_id` and `plan_id`).
    pub(super) fn required<'a>(field: &'a Option<String>, name: &str) -> Result<&'a str, OsbError> {
        field
            .as_deref()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OsbError::bad_request(format!("the query parameter {name} is required")))
    }
}

/// The instance parameters a request carries, checked against its service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(super) struct Parameters {
    /// the service version (provision only)
    pub(super) version: Option<String>,
    /// storage in GiB
    pub(super) storage_gib: Option<u32>,
    /// configuration parameters; `None` (JSON `null`, update only) unsets one
    pub(super) config: BTreeMap<String, Option<ConfigValue>>,
}

/// Reads `parameters` for a provision (`create`) or an update of an instance of `offering`: each key must
/// be one the plan's schema lists, each value of its kind; 400 naming the parameter otherwise (422 on an
/// update, whose spec has 422 for a change it does not support).
pub(super) fn parameters(
    value: Option<&Value>,
    offering: &ServiceOffering,
    create: bool,
) -> Result<Parameters, OsbError> {
    let invalid = |detail: String| {
        let mut e = OsbError::bad_request(detail);
        if !create {
            e.status = StatusCode::UNPROCESSABLE_ENTITY;
            e.error = "ValidationFailed".into();
        }
        e
    };
    let mut out = Parameters::default();
    let object = match value {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(OsbError::bad_request("parameters must be a JSON object")),
    };
    for (key, value) in object {
        match key.as_str() {
            "version" if !create => {
                return Err(invalid(
                    "parameters.version: an instance's version changes through maintenance_info (the catalog's \
                     newest), not a parameter"
                        .into(),
                ));
            }
            "version" => match value.as_str() {
                Some(v) if offering.offers_version(v) => out.version = Some(v.to_owned()),
                _ => {
                    return Err(invalid(format!(
                        "parameters.version: must be one of the offered versions {}",
                        offering.versions.join(", ")
                    )));
                }
            },
            "storage_gib" => match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(v) => out.storage_gib = Some(v),
                None => return Err(invalid("parameters.storage_gib: must be a whole number of GiB".into())),
            },
            name => {
                let Some(key) = offering.config_key(name) else {
                    return Err(invalid(format!(
                        "parameters.{name}: not a parameter of {} (the plan's schemas list them)",
                        offering.service
                    )));
                };
                if value.is_null() && !create {
                    out.config.insert(name.to_owned(), None);
                    continue;
                }
                let parsed = wire::config_value(name, value)
                    .map_err(|e| invalid(format!("parameters.{name}: {}", e.detail)))?;
                key.kind.check(&parsed).map_err(|rule| invalid(format!("parameters.{name}: {rule}")))?;
                out.config.insert(name.to_owned(), Some(parsed));
            }
        }
    }
    Ok(out)
}

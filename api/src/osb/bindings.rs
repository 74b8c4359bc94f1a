//! Service Bindings (spec *Binding*, *Fetching a Service Binding*, *Unbinding*, *Polling Last Operation for
//! Service Bindings*). Bindings are to be the instance's users (issue 27); until the broker creates them,
//! every plan says `bindable: false` (`super::catalog::BINDABLE`) and these routes answer as for a broker
//! without bindings: a bind request is invalid data (400, spec *Binding*: "Platforms MUST NOT make a binding
//! request … for any Service Instance using the given Service Offering or Service Plan" that is not
//! bindable), and no binding exists to fetch (404), poll (404) or delete (410).

use axum::{extract::State, http::HeaderMap, response::Response};
use serde::Deserialize;
use serde_json::Value;

use super::{
    body::{self, OsbPath, Raw},
    catalog::BINDABLE,
    error::{OsbError, Request},
    instances::resolve,
};
use crate::AppState;

/// `PUT …/service_bindings/:binding_id` (spec *Request (Creating a Service Binding)*, *Body*).
#[derive(Debug, Deserialize)]
struct BindBody {
    service_id: String,
    plan_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    context: Option<Value>,
}

/// Creates a Service Binding: refused while no plan is bindable.
pub(super) async fn bind(
    State(state): State<AppState>,
    OsbPath((_instance, _binding)): OsbPath<(String, String)>,
    query: body::Query,
    headers: HeaderMap,
    Raw(raw): Raw,
) -> Result<Response, OsbError> {
    query.accepts_incomplete()?;
    let request: BindBody = body::json(&headers, &raw, Request::Bind)?;
    let (offering, plan) = resolve(state.catalog(), &request.service_id, Some(&request.plan_id))?;
    let plan = plan.map(|p| p.name.as_str()).unwrap_or_default();
    const { assert!(!BINDABLE, "bindable plans need bindings served here") };
    let mut refused = OsbError::bad_request(format!(
        "plan {plan} of {} is not bindable (the catalog says bindable: false): this broker does not create \
         bindings (per-application users) yet",
        offering.service
    ));
    refused.error = "NotBindable".into();
    Err(refused)
}

/// Fetches a Service Binding: there are none.
pub(super) async fn fetch(
    OsbPath((_instance, _binding)): OsbPath<(String, String)>,
) -> Result<Response, OsbError> {
    Err(OsbError::not_found("no such service binding"))
}

/// Polls a Service Binding's operation: there are none.
pub(super) async fn last_operation(
    OsbPath((_instance, _binding)): OsbPath<(String, String)>,
) -> Result<Response, OsbError> {
    Err(OsbError::not_found("no such service binding"))
}

/// Deletes a Service Binding: there are none (410, spec *Unbinding*).
pub(super) async fn unbind(
    OsbPath((_instance, _binding)): OsbPath<(String, String)>,
    query: body::Query,
) -> Result<Response, OsbError> {
    query.accepts_incomplete()?;
    body::Query::required(&query.service_id, "service_id")?;
    body::Query::required(&query.plan_id, "plan_id")?;
    Err(OsbError::gone("service binding"))
}

//! The OpenAPI document's frame; paths and schemas are collected from the handlers, then the rules a
//! schema can express are written in (`openapi/rules.rs`).

mod rules;

use crate::error::{FieldError, Problem};

/// OpenAPI 3.1 document of the API.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "Managed services control plane",
        version = "v1",
        description = "Provision, change and remove managed PostgreSQL, MongoDB, InfluxDB and Grafana instances.\n\n\
            Writes answer 202 with an operation; poll `GET /v1/projects/{project}/operations/{id}`. \
            Reads return an `ETag` (the instance version); send it as `If-Match` to make a write conditional \
            (412 when it moved). Send `Idempotency-Key` on any write to make retries safe. \
            Errors are RFC 9457 `application/problem+json`."
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "instances", description = "Managed-service instances"),
        (name = "users", description = "Per-application database users of an instance, each with a role from the service's catalog"),
        (name = "operations", description = "Asynchronous operations"),
        (name = "catalog", description = "What may be provisioned: services, versions, plans, parameters"),
        (name = "admin", description = "Operator endpoints"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// The document as served: the generated one with every rule a schema can express, the registered
/// clusters and regions among them.
pub fn document(
    generated: &utoipa::openapi::OpenApi,
    clusters: &[domain::Cluster],
    catalog: &domain::Catalog,
) -> serde_json::Value {
    let mut document = serde_json::to_value(generated).unwrap_or_default();
    rules::apply(&mut document, clusters, catalog);
    document
}

//! The Open Service Broker API v2.17 facade (`/v2/…`; spec: `openservicebrokerapi/servicebroker`, tag
//! v2.17, `spec.md`; its `openapi.yaml` is kept in `tests/osb/`). An edge of its own: its router, its
//! error body (`error.rs`) and its guard (`auth.rs`), translating platform requests into the same instance
//! commands `/v1` runs, through the same write path (`routes::write::run`).
//!
//! - `ids.rs`: platform instance ids, `context` → project, catalog ids, `maintenance_info` versions
//! - `catalog.rs`: `GET /v2/catalog`
//! - `instances.rs`: provision, fetch, update, deprovision
//! - `last_operation.rs`: polling an instance's operation
//! - `bindings.rs`: Service Bindings, the instance's users
//! - `body.rs`, `lookup.rs`: reading requests; finding the instance an id names

pub mod auth;
mod bindings;
mod body;
pub mod catalog;
pub mod error;
pub mod ids;
mod instances;
mod last_operation;
mod lookup;

use axum::{
    Router,
    routing::{get, put},
};

use crate::AppState;

/// The broker's routes, behind its guard. Each is listed in `auth::ROUTES` as `Broker`, so the API's own
/// middleware lets it through to this guard.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v2/catalog", get(catalog::get_catalog))
        .route(
            "/v2/service_instances/{instance_id}",
            put(instances::provision)
                .patch(instances::update)
                .delete(instances::deprovision)
                .get(instances::fetch),
        )
        .route(
            "/v2/service_instances/{instance_id}/last_operation",
            get(last_operation::instance_last_operation),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}",
            put(bindings::bind).get(bindings::fetch).delete(bindings::unbind),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation",
            get(bindings::last_operation),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, auth::guard))
}

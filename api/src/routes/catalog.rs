//! The service catalog: what may be provisioned, on which plans, with which parameters.

use axum::{
    Json,
    extract::{Path, State},
};
use domain::ServiceType;

use crate::{
    ApiError, AppState,
    dto::{self, Service, ServiceCatalog},
};

/// Lists every offered service with its versions (and where each may be upgraded to), plans and
/// configuration parameters (type, range or allowed values, and how a change applies).
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog", responses((status = 200, body = dto::Catalog)))]
pub(super) async fn get_catalog(State(state): State<AppState>) -> Json<dto::Catalog> {
    Json(dto::Catalog { services: state.catalog().offerings().iter().map(ServiceCatalog::from).collect() })
}

/// What one service offers.
#[utoipa::path(
    get,
    path = "/v1/catalog/{service}",
    tag = "catalog",
    params(("service" = Service, Path, description = "the service")),
    responses(
        (status = 200, body = ServiceCatalog),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_service_catalog(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Result<Json<ServiceCatalog>, ApiError> {
    let service: ServiceType = service.parse().map_err(|()| ApiError::NotFound("service"))?;
    let offering = state.catalog().offering(service).ok_or(ApiError::NotFound("service"))?;
    Ok(Json(ServiceCatalog::from(offering)))
}

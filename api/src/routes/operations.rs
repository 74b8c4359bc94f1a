//! Operations: what a write started, fetchable again by a client that lost the response.

use crate::dto::Convert;
use axum::{
    Json,
    extract::{Path, State},
};

use crate::{ApiError, AppState, dto::Operation, error::Problem};

/// Gets an operation.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/operations/{operation_id}",
    tag = "operations",
    params(
        ("project" = String, Path, description = "project"),
        ("operation_id" = String, Path, description = "operation id"),
    ),
    responses(
        (status = 200, body = Operation),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_operation(
    State(state): State<AppState>,
    Path((project, operation_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Operation>, ApiError> {
    domain::instance::check_dns_label("project", &project)?;
    let id = operation_id.parse().map_err(|_| ApiError::NotFound("operation"))?;
    super::write::read_your_writes(&state, &headers).await?;
    if state.read_models.read().operation(&project, id).is_none() {
        super::write::catch_up(&state).await?;
    }
    let operation = state.read_models.read().operation(&project, id);
    operation.map(|op| Json(Operation::convert(&op))).ok_or(ApiError::NotFound("operation"))
}

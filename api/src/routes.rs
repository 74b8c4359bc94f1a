//! The router: every route, its OpenAPI entry, and the middleware around them.

mod admin;
mod backups;
mod catalog;
pub(crate) mod credentials;
mod feed;
mod fleet;
mod health;
mod history;
mod instances;
mod maintenance;
mod network;
mod operations;
mod restore;
mod rollouts;
mod schedules;
mod ui;
mod users;
pub(crate) mod write;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::HeaderName,
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

use crate::{ApiError, AppState, extract::BODY_LIMIT, openapi::ApiDoc};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's router and its OpenAPI document.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(instances::create_instance, instances::list_instances))
        .routes(routes!(instances::get_instance, instances::update_instance, instances::delete_instance))
        .routes(routes!(network::get_acl, network::replace_acl, network::add_acl_entry))
        .routes(routes!(network::remove_acl_entry))
        .routes(routes!(credentials::get_credentials))
        .routes(routes!(credentials::rotate_credentials))
        .routes(routes!(maintenance::apply_maintenance))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::delete_user))
        .routes(routes!(users::rotate_user_password))
        .routes(routes!(users::get_user_credentials))
        .routes(routes!(backups::create_backup, backups::list_backups))
        .routes(routes!(backups::get_backup, backups::delete_backup))
        .routes(routes!(restore::restore_instance))
        .routes(routes!(history::history))
        .routes(routes!(history::diff))
        .routes(routes!(history::verify))
        .routes(routes!(schedules::list_schedules, schedules::create_schedule))
        .routes(routes!(schedules::get_schedule, schedules::replace_schedule, schedules::delete_schedule))
        .routes(routes!(operations::get_operation))
        .routes(routes!(feed::events))
        .routes(routes!(catalog::get_catalog))
        .routes(routes!(catalog::get_service_catalog))
        .routes(routes!(admin::list_clusters))
        .routes(routes!(admin::register_cluster))
        .routes(routes!(fleet::cordon))
        .routes(routes!(fleet::uncordon))
        .routes(routes!(fleet::drain))
        .routes(routes!(fleet::migrate))
        .routes(routes!(fleet::cancel_migration))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(rollouts::create_rollout, rollouts::list_rollouts))
        .routes(routes!(rollouts::get_rollout))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

/// The whole application: routes, `/openapi.json`, `/docs`, `/metrics`, and middleware (request ids,
/// tracing, metrics, body limit, panic to 500).
pub fn app(state: AppState) -> Router {
    let (router, spec) = router();
    router
        .route(
            "/openapi.json",
            axum::routing::get(move |State(state): State<AppState>| async move {
                Json(crate::openapi::document(&spec, &state.clusters.list(), state.catalog()))
            }),
        )
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .merge(ui::router())
        .merge(crate::osb::router(state.clone()))
        // The UI reads the document as served (with the rules and the registered clusters), not the bare
        // generated one.
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .fallback(|| async { ApiError::NotFound("route") })
        // Innermost, so refusals are traced and counted like any answer.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::authorize))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok());
                    tracing::info_span!("request", method = %request.method(), route, request_id = id)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}

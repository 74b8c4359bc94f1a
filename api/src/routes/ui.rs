//! The dashboard: static assets built into the binary (no CDN, works offline), which call the public
//! API and the event feed with the token the user signs in with. The page itself holds no data, so it
//! is public; every request it makes is authorized like any other client's.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::{ApiError, AppState};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const USERS_SCRIPT: &str = include_str!("../../ui/users.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Only this origin's scripts, styles and requests: the token the page holds cannot be sent elsewhere,
/// and no injected markup can run.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; \
                      base-uri 'none'";

/// `/ui/` and its assets; `/` and `/ui` lead to it.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/ui/{asset}",
            get(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                match name.as_str() {
                    "app.js" => asset("text/javascript; charset=utf-8", SCRIPT),
                    "users.js" => asset("text/javascript; charset=utf-8", USERS_SCRIPT),
                    "app.css" => asset("text/css; charset=utf-8", STYLE),
                    _ => ApiError::NotFound("asset").into_response(),
                }
            }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Assets change with the binary; a deployment must not serve a stale script beside a new API.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

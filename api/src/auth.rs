//! Who is calling and what they may do: bearer tokens, the role each grants per project, and the table
//! of what every route needs (`auth/routes.rs`).
//!
//! A token grants roles per project (`viewer` < `editor` < `admin`, or one role on every project with
//! the key `*`) and may be a platform admin (registers clusters). Resources of a project the token has
//! no role in answer 404, as if they did not exist, so existence does not leak; a role too weak for the
//! route answers 403. Every event records the caller as its actor.

mod oidc;
mod routes;
mod tokens;

use std::collections::BTreeMap;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

pub use oidc::{
    FetchError, MAX_KEY_AGE, MAX_KEY_STALENESS, MIN_REFETCH_INTERVAL, OidcConfig, OidcError, OidcVerifier,
};
pub use routes::{ROUTES, Requirement, allowed_methods, requirement};
pub use tokens::{ApiTokens, TokenEntry, TokensError, hash_token, new_token, parse_grants};

use crate::{ApiError, AppState};

/// What a token may do in a project. Ordered: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// read
    Viewer,
    /// read and change instances
    Editor,
    /// everything in the project
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// who (a person or a service account)
    pub subject: String,
    /// the API token's name, when authenticated by one
    pub token_name: Option<String>,
    /// may register clusters and change the catalog
    pub platform_admin: bool,
    /// role per project; the key `*` grants a role on every project
    pub projects: BTreeMap<String, Role>,
}

impl Principal {
    /// The caller's role in `project`, if any.
    pub fn role_in(&self, project: &str) -> Option<Role> {
        let named = self.projects.get(project).copied();
        let everywhere = self.projects.get("*").copied();
        named.max(everywhere)
    }

    /// Refuses with 403 unless the caller is an admin of `project`: for what replaces or destroys data
    /// or lifts a protection against it, which the route table cannot see (it depends on the body).
    pub fn require_admin(&self, project: &str, what: &str) -> Result<(), ApiError> {
        match self.role_in(project) {
            Some(Role::Admin) => Ok(()),
            held => Err(ApiError::Forbidden(format!(
                "{what} needs the admin role in project {project}; the token has {}",
                held.map_or("none", Role::as_str)
            ))),
        }
    }

    /// The actor recorded in events: the subject, and the token's name when there is one.
    pub fn actor(&self) -> String {
        match &self.token_name {
            Some(name) => format!("{} (token {name})", self.subject),
            None => self.subject.clone(),
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// no `Authorization: Bearer` header
    Missing,
    /// a token nobody issued, or no longer valid
    Invalid,
}

/// The middleware in front of every route: authenticates the caller, checks the route's
/// [`Requirement`] and leaves the [`Principal`] in the request's extensions for handlers.
pub async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()) else {
        // No route matched: the fallback answers 404 whoever asks.
        return next.run(request).await;
    };
    // HEAD is served wherever GET is (axum answers it with the GET handler), and needs what GET needs.
    let method = if request.method() == Method::HEAD { Method::GET } else { request.method().clone() };
    let Some(required) = requirement(&method, &route) else {
        // A method nothing serves on this route: 405, as the router would answer, before any
        // authentication (RFC 9110 section 15.5.6 asks for `Allow`).
        let allow = routes::allowed_methods(&route);
        return (axum::http::StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)]).into_response();
    };
    if matches!(required, Requirement::Public | Requirement::Broker) {
        return next.run(request).await;
    }
    let principal = match authenticate(&state, request.headers().get(header::AUTHORIZATION)).await {
        Ok(principal) => principal,
        Err(why) => return unauthenticated(why),
    };
    let allowed = match required {
        Requirement::Public | Requirement::Broker | Requirement::Authenticated => Ok(()),
        Requirement::PlatformAdmin if principal.platform_admin => Ok(()),
        Requirement::PlatformAdmin => match project_of(&route, request.uri().path()) {
            // A project's route for platform admins (moving an instance): another project's token learns
            // nothing of it there either, as on every project route.
            Some(project) if principal.role_in(&project).is_none() => Err(ApiError::NotFound("instance")),
            _ => Err(ApiError::Forbidden("this needs the platform-admin role".into())),
        },
        Requirement::Project(role) => match project_of(&route, request.uri().path()) {
            None => Err(ApiError::NotFound("project")),
            Some(project) => match principal.role_in(&project) {
                // Not the caller's project: as if it did not exist.
                None => Err(ApiError::NotFound("instance")),
                Some(held) if held < role => Err(ApiError::Forbidden(format!(
                    "this needs the {} role in project {project}; the token has {}",
                    role.as_str(),
                    held.as_str()
                ))),
                Some(_) => Ok(()),
            },
        },
    };
    if let Err(refused) = allowed {
        return refused.into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The caller an `Authorization` header names: a JWT (three dot-separated parts, RFC 7519 section 3) when
/// an OIDC issuer is configured, an API token otherwise (they have no dots).
async fn authenticate(state: &AppState, header: Option<&HeaderValue>) -> Result<Principal, Unauthenticated> {
    principal_of(state, bearer_token(header)?).await
}

/// The caller a token names, however it came (the OSB facade takes it as HTTP Basic's password).
pub(crate) async fn principal_of(state: &AppState, token: &str) -> Result<Principal, Unauthenticated> {
    match &state.oidc {
        Some(oidc) if token.split('.').count() == 3 => oidc.authenticate(token).await,
        _ => state.tokens.authenticate(token),
    }
}

/// The token of an `Authorization: Bearer` header (RFC 6750 section 2.1; the scheme is case-insensitive,
/// RFC 9110 section 11.1).
fn bearer_token(header: Option<&HeaderValue>) -> Result<&str, Unauthenticated> {
    let value = header.ok_or(Unauthenticated::Missing)?.to_str().map_err(|_| Unauthenticated::Invalid)?;
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Unauthenticated::Missing)
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

/// The `{project}` segment of `path`, matched against the route template `route`, percent-decoded as
/// handlers see it through axum's `Path` (a grant for `acme` must be what opens `%61cme`, and a grant
/// for `%61cme` must open nothing else). `None` when it does not decode to UTF-8.
fn project_of<'a>(route: &str, path: &'a str) -> Option<std::borrow::Cow<'a, str>> {
    let index = route.split('/').position(|segment| segment == "{project}")?;
    percent_encoding::percent_decode_str(path.split('/').nth(index)?).decode_utf8().ok()
}

/// 401 with the challenge RFC 6750 (section 3) asks for.
fn unauthenticated(why: Unauthenticated) -> Response {
    let (detail, challenge) = match why {
        Unauthenticated::Missing => ("this route needs a bearer token", r#"Bearer realm="cp""#),
        Unauthenticated::Invalid => (
            "the bearer token is not valid",
            r#"Bearer realm="cp", error="invalid_token", error_description="the token is not valid""#,
        ),
    };
    let mut response = ApiError::Unauthorized(detail.into()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_is_read_where_the_route_template_has_it() {
        let route = "/v1/projects/{project}/instances/{id}/acl/{cidr}";
        let project = |path| project_of(route, path).map(|p| p.into_owned());
        assert_eq!(project("/v1/projects/acme/instances/x/acl/10.0.0.0%2F8").as_deref(), Some("acme"));
        assert_eq!(project_of("/v1/catalog", "/v1/catalog"), None);
        // Decoded as the handlers' `Path` decodes it: `%61cme` is project acme, whatever grant names it.
        assert_eq!(project("/v1/projects/%61cme/instances/x/acl/y").as_deref(), Some("acme"));
        assert_eq!(project("/v1/projects/%FF/instances/x/acl/y"), None);
    }

    #[test]
    fn the_token_is_read_from_a_bearer_header_only() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(bearer_token(Some(&header("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(Some(&header("bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(Some(&header("Basic abc"))), Err(Unauthenticated::Missing));
        assert_eq!(bearer_token(Some(&header("Bearer "))), Err(Unauthenticated::Missing));
        assert_eq!(bearer_token(None), Err(Unauthenticated::Missing));
    }

    #[test]
    fn a_role_on_every_project_and_one_on_a_project_combine_to_the_stronger() {
        let principal = Principal {
            subject: "s".into(),
            token_name: None,
            platform_admin: false,
            projects: [("*".to_owned(), Role::Viewer), ("acme".to_owned(), Role::Editor)].into(),
        };
        assert_eq!(principal.role_in("acme"), Some(Role::Editor));
        assert_eq!(principal.role_in("other"), Some(Role::Viewer));
    }
}

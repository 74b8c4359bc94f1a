//! The broker's guard, in front of every `/v2` route: who the platform is, and which version of the API
//! it speaks; and whose action a request is (the originating identity), recorded as the events' actor.
//!
//! Platforms authenticate with HTTP Basic (spec *Platform to Service Broker Authentication*: "the
//! Platform MUST authenticate with the Service Broker using HTTP basic authentication"); the password is
//! one of the API's own tokens (the username is not checked: name the token there). A bearer token is
//! taken too. What the token may do is its role per project, as on `/v1`: the project of an instance is
//! where its `context` put it (`super::ids::project`).

use axum::{
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;

use super::error::OsbError;
use crate::{
    AppState,
    auth::{Principal, Role},
};

/// The oldest `X-Broker-API-Version` served: 2.13 added what this broker relies on, the catalog's
/// parameter `schemas`, `context` on binding requests and the originating identity header (v2.17
/// `release-notes.md`, *v2.13*); older platforms are refused with 412.
pub const OLDEST_VERSION: (u32, u32) = (2, 13);

/// Authenticates the platform and checks its API version; leaves the [`Principal`] for the handlers.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let principal = match authenticate(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = check_version(request.headers()) {
        return refused.into_response();
    }
    request.extensions_mut().insert(principal);
    // Spec *Request Identity*: "The Service Broker SHOULD include this header in the response".
    let identity = request.headers().get("x-broker-api-request-identity").cloned();
    let mut response = next.run(request).await;
    if let Some(identity) = identity {
        response.headers_mut().insert("x-broker-api-request-identity", identity);
    }
    response
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, OsbError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            OsbError::unauthorized("the broker needs HTTP Basic authentication: an API token as password")
        })?
        .to_str()
        .map_err(|_| OsbError::unauthorized("the Authorization header is not text"))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let token = if scheme.eq_ignore_ascii_case("basic") {
        // RFC 7617 section 2: base64 of `user-id ":" password`.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| OsbError::unauthorized("the Basic credentials are not base64 of user:password"))?;
        let (_, password) = decoded
            .split_once(':')
            .ok_or_else(|| OsbError::unauthorized("the Basic credentials are not user:password"))?;
        password.to_owned()
    } else if scheme.eq_ignore_ascii_case("bearer") {
        credentials.trim().to_owned()
    } else {
        return Err(OsbError::unauthorized("the broker needs HTTP Basic authentication"));
    };
    crate::auth::principal_of(state, &token).await.map_err(|_| {
        OsbError::unauthorized("the credentials are not valid (the password must be an API token)")
    })
}

/// `X-Broker-API-Version: MAJOR.MINOR` (spec *API Version Header*): a request without it is refused
/// with 400, one below [`OLDEST_VERSION`] (or of another major) with 412, both naming the version to use.
fn check_version(headers: &HeaderMap) -> Result<(), OsbError> {
    let value = headers
        .get("x-broker-api-version")
        .ok_or_else(|| OsbError::bad_request("the X-Broker-API-Version header is required (use 2.17)"))?;
    let parsed = value.to_str().ok().and_then(|v| {
        let (major, minor) = v.trim().split_once('.')?;
        let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u32>().ok()).flatten();
        Some((number(major)?, number(minor)?))
    });
    let Some((major, minor)) = parsed else {
        return Err(OsbError::bad_request("X-Broker-API-Version must be MAJOR.MINOR, e.g. 2.17"));
    };
    if major != OLDEST_VERSION.0 || minor < OLDEST_VERSION.1 {
        return Err(OsbError::unsupported_version(format!(
            "X-Broker-API-Version {major}.{minor} is not served: use 2.{} to 2.17",
            OLDEST_VERSION.1
        )));
    }
    Ok(())
}

/// The caller as the events record it: the platform user of `X-Broker-API-Originating-Identity`
/// (spec *Originating Identity*: `<platform> <base64 of a JSON object>`), through the broker's token,
/// e.g. `cloudfoundry user 683ea748-… via cf-broker@ops (token cf-broker)`. Without the header, the
/// token's holder. A header that breaks the format, or names another platform than `context.platform`
/// (which the spec requires to be the same), is refused with 400.
pub fn acting(
    principal: &Principal,
    headers: &HeaderMap,
    context_platform: Option<&str>,
) -> Result<Principal, OsbError> {
    let Some(value) = headers.get("x-broker-api-originating-identity") else { return Ok(principal.clone()) };
    let bad = |why: &str| OsbError::bad_request(format!("X-Broker-API-Originating-Identity: {why}"));
    let value = value.to_str().map_err(|_| bad("not text"))?;
    let (platform, encoded) =
        value.split_once(' ').ok_or_else(|| bad("must be `<platform> <base64 JSON>`"))?;
    if platform.is_empty() {
        return Err(bad("the platform must be a non-empty string"));
    }
    if let Some(context) = context_platform
        && context != platform
    {
        return Err(bad(&format!(
            "names platform {platform:?}, context.platform is {context:?}; they must be the same"
        )));
    }
    let json: serde_json::Value = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| bad("the value must be base64 of a serialized JSON object"))?;
    // The profile's user properties: Cloud Foundry's `user_id`, Kubernetes' `username` (OSB profile,
    // *Originating Identity Header*); any other platform's object as sent.
    let user = ["user_id", "username"]
        .iter()
        .find_map(|key| json.get(key).and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| json.to_string());
    let user: String = user.chars().filter(|c| !c.is_control()).take(200).collect();
    Ok(Principal {
        subject: format!("{platform} user {user} via {}", principal.subject),
        ..principal.clone()
    })
}

/// Refuses with 403 unless the caller holds `role` in `project`: for a project the request names itself
/// (a provision's context), so there is nothing to hide.
pub fn require(principal: &Principal, project: &str, role: Role) -> Result<(), OsbError> {
    match principal.role_in(project) {
        Some(held) if held >= role => Ok(()),
        held => Err(OsbError::forbidden(format!(
            "this needs the {} role in project {project}; the token has {}",
            role.as_str(),
            held.map_or("none", Role::as_str)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn versions_below_2_13_are_refused_with_412_and_a_missing_one_with_400() {
        let status =
            |v: &str| check_version(&headers(&[("x-broker-api-version", v)])).map_err(|e| e.status.as_u16());
        assert_eq!(status("2.17"), Ok(()));
        assert_eq!(status("2.13"), Ok(()));
        assert_eq!(status("2.12"), Err(412));
        assert_eq!(status("3.0"), Err(412));
        assert_eq!(status("two"), Err(400));
        assert_eq!(check_version(&HeaderMap::new()).unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn the_originating_identity_is_the_actor() {
        let principal = Principal {
            subject: "cf@ops".into(),
            token_name: Some("cf".into()),
            platform_admin: false,
            projects: Default::default(),
        };
        // The spec's own example (*Originating Identity*).
        let example =
            "cloudfoundry eyANCiAgInVzZXJfaWQiOiAiNjgzZWE3NDgtMzA5Mi00ZmY0LWI2NTYtMzljYWNjNGQ1MzYwIg0KfQ==";
        let acting =
            acting(&principal, &headers(&[("x-broker-api-originating-identity", example)]), None).unwrap();
        assert_eq!(
            acting.actor(),
            "cloudfoundry user 683ea748-3092-4ff4-b656-39cacc4d5360 via cf@ops (token cf)"
        );
        let other = headers(&[("x-broker-api-originating-identity", example)]);
        assert_eq!(acting_status(&principal, &other, Some("kubernetes")), 400);
        let broken = headers(&[("x-broker-api-originating-identity", "cloudfoundry !!")]);
        assert_eq!(acting_status(&principal, &broken, None), 400);
    }

    fn acting_status(principal: &Principal, headers: &HeaderMap, platform: Option<&str>) -> u16 {
        acting(principal, headers, platform).unwrap_err().status.as_u16()
    }
}

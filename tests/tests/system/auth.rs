//! Authentication and authorisation over HTTP: no token is 401, another project's resources are 404 (as
//! if they did not exist), a viewer's write is 403, and every event names who asked.

use axum::http::{Method, StatusCode};
use serde_json::json;
use streams::envelope::headers;
use system_tests::{ACME_EDITOR_TOKEN, ACME_VIEWER_TOKEN, OTHER_EDITOR_TOKEN, TestApi};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Provisions PostgreSQL instance `db` in acme as acme's editor.
async fn provision_as_acme_editor(api: &TestApi) -> system_tests::Reply {
    let body = json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    let editor = bearer(ACME_EDITOR_TOKEN);
    let created = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor)])
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    created
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_401_with_a_challenge_and_health_stays_open() {
    let api = TestApi::start().await;
    let none = api.call(Method::GET, "/v1/projects/acme/instances", None, &[("authorization", "")]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.header("www-authenticate"), Some(r#"Bearer realm="cp""#));
    assert_eq!(none.header("content-type"), Some("application/problem+json"));
    let wrong = api.call(Method::GET, "/v1/catalog", None, &[("authorization", "Bearer not-a-token")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("www-authenticate").is_some_and(|c| c.contains(r#"error="invalid_token""#)));
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = api.call(Method::GET, open, None, &[("authorization", "")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{open} needs no token");
    }
}

#[tokio::test]
async fn another_project_s_resources_do_not_exist_for_a_token_and_nothing_reaches_the_log() {
    let api = TestApi::start().await;
    let created = provision_as_acme_editor(&api).await;
    let id = created.body["instance_id"].as_str().unwrap();
    let operation = created.body["id"].as_str().unwrap();
    let messages = api.stream_messages().await;

    let outsider = bearer(OTHER_EDITOR_TOKEN);
    let instance = format!("/v1/projects/acme/instances/{id}");
    let attempts = [
        (Method::GET, "/v1/projects/acme/instances".to_owned(), None),
        (Method::GET, instance.clone(), None),
        (Method::PATCH, instance.clone(), Some(json!({"description": "mine now"}))),
        (Method::DELETE, instance.clone(), None),
        (Method::GET, format!("{instance}/acl"), None),
        (Method::PUT, format!("{instance}/acl"), Some(json!({"entries": []}))),
        (Method::GET, format!("/v1/projects/acme/operations/{operation}"), None),
        (Method::GET, "/v1/projects/acme/events".to_owned(), None),
        (
            Method::POST,
            "/v1/projects/acme/instances".to_owned(),
            Some(json!({"name": "x", "service": "postgresql", "version": "16", "plan": "starter"})),
        ),
    ];
    for (method, path, body) in attempts {
        let reply = api.call(method.clone(), &path, body.as_ref(), &[("authorization", &outsider)]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}: {}", reply.body);
    }
    assert_eq!(api.stream_messages().await, messages, "no refused request reached the event log");
}

#[tokio::test]
async fn a_viewer_reads_but_its_writes_are_403_and_clusters_need_a_platform_admin() {
    let api = TestApi::start().await;
    let created = api.provision("acme", "db").await;
    let instance = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let viewer = bearer(ACME_VIEWER_TOKEN);
    let read = api.call(Method::GET, &instance, None, &[("authorization", &viewer)]).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let messages = api.stream_messages().await;
    let write = api
        .call(Method::PATCH, &instance, Some(&json!({"description": "x"})), &[("authorization", &viewer)])
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.body);
    assert_eq!(write.body["code"], "forbidden");
    assert_eq!(api.stream_messages().await, messages);

    let editor = bearer(ACME_EDITOR_TOKEN);
    let register = api
        .call(
            Method::PUT,
            "/v1/admin/clusters/eu-9",
            Some(&json!({"region": "eu-north"})),
            &[("authorization", &editor)],
        )
        .await;
    assert_eq!(register.status, StatusCode::FORBIDDEN, "{}", register.body);
    let catalog = api.call(Method::GET, "/v1/catalog", None, &[("authorization", &viewer)]).await;
    assert_eq!(catalog.status, StatusCode::OK, "any valid token reads the catalog");
}

#[tokio::test]
async fn every_event_names_the_caller_and_the_token() {
    let api = TestApi::start().await;
    let created = provision_as_acme_editor(&api).await;
    let sequence: u64 = created.header("cp-stream-sequence").unwrap().parse().unwrap();
    let message = api.state.events.direct_get(sequence).await.unwrap();
    assert_eq!(
        message.headers.get(headers::ACTOR).map(|v| v.as_str()),
        Some("acme-editor@tests (token acme-editor)")
    );
}

#[tokio::test]
async fn a_method_no_route_serves_is_405_whoever_asks() {
    let api = TestApi::start().await;
    let reply = api.call(Method::TRACE, "/healthz", None, &[("authorization", "")]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    let head = api.call(Method::HEAD, "/healthz", None, &[("authorization", "")]).await;
    assert_eq!(head.status, StatusCode::OK, "HEAD is served where GET is");
    let head = api.call(Method::HEAD, "/v1/catalog", None, &[("authorization", "")]).await;
    assert_eq!(head.status, StatusCode::UNAUTHORIZED, "and needs what GET needs");
}

//! Bad input gets a precise 4xx problem naming the field, and never reaches the stream.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use serde_json::{Value, json};
use system_tests::{Reply, TestApi};

fn assert_problem(reply: &Reply, status: StatusCode, field: Option<&str>, rule: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    assert_eq!(reply.body["status"], status.as_u16());
    assert!(reply.body["type"].as_str().unwrap().starts_with("https://"));
    assert!(!reply.body["title"].as_str().unwrap().is_empty());
    if let Some(field) = field {
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.body);
    }
    if let Some(rule) = rule {
        assert_eq!(reply.body["errors"][0]["rule"], rule, "{}", reply.body);
    }
}

fn valid() -> Value {
    json!({"name": "db", "service": "postgresql", "version": "16", "plan": "standard"})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = valid();
    body[field] = value;
    body
}

#[tokio::test]
async fn bad_provision_requests_name_the_field_and_leave_the_stream_alone() {
    let api = TestApi::start().await;
    let post = |body: Value| {
        let api = &api;
        async move { api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await }
    };
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (with("name", json!("Orders_DB")), StatusCode::UNPROCESSABLE_ENTITY, "/name", "dns1123_label"),
        (with("name", json!(42)), StatusCode::UNPROCESSABLE_ENTITY, "/name", "type"),
        (with("version", json!("9.6")), StatusCode::UNPROCESSABLE_ENTITY, "/version", "offered_version"),
        (with("plan", json!("huge")), StatusCode::UNPROCESSABLE_ENTITY, "/plan", "offered_plan"),
        (with("service", json!("mysql")), StatusCode::UNPROCESSABLE_ENTITY, "/service", "one_of"),
        (with("storage_gib", json!(-5)), StatusCode::UNPROCESSABLE_ENTITY, "/storage_gib", "type"),
        (
            with("storage_gib", json!(1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/storage_gib",
            "storage_at_least_plan",
        ),
        (with("colour", json!("blue")), StatusCode::UNPROCESSABLE_ENTITY, "/colour", "unknown_field"),
        (
            with("config", json!({"max_connections": "lots"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/config/max_connections",
            "config_value",
        ),
        (
            with("config", json!({"max_connections": 1.5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/config/max_connections",
            "scalar",
        ),
        (
            with("config", json!({"fsync": false})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/config/fsync",
            "known_config_key",
        ),
        (
            with("description", json!("x".repeat(300))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/description",
            "max_length",
        ),
        (
            json!({"service": "postgresql", "version": "16", "plan": "standard"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "/name",
            "required",
        ),
    ];
    for (body, status, field, rule) in cases {
        let reply = post(body.clone()).await;
        assert_problem(&reply, status, Some(field), Some(rule));
    }
    let bad_project = api.call(Method::POST, "/v1/projects/Bad_Project/instances", Some(&valid()), &[]).await;
    assert_problem(&bad_project, StatusCode::UNPROCESSABLE_ENTITY, Some("/project"), Some("dns1123_label"));
    assert_eq!(api.stream_messages().await, 0, "nothing reached the stream");
}

#[tokio::test]
async fn malformed_unsupported_and_oversized_bodies_are_refused() {
    let api = TestApi::start().await;
    let raw = |body: Vec<u8>, content_type: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/projects/acme/instances")
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let malformed = api.send(raw(b"{\"name\": \"db\",".to_vec(), "application/json")).await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST, None, None);
    assert_eq!(malformed.body["code"], "malformed_json");
    let text = api.send(raw(serde_json::to_vec(&valid()).unwrap(), "text/plain")).await;
    assert_problem(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE, None, None);
    let mut big = valid();
    big["description"] = json!("x".repeat(2 * 1024 * 1024));
    let oversized = api.send(raw(serde_json::to_vec(&big).unwrap(), "application/json")).await;
    assert_problem(&oversized, StatusCode::PAYLOAD_TOO_LARGE, None, None);
    assert_eq!(api.stream_messages().await, 0);
    // and the API still works afterwards
    assert_eq!(api.provision("acme", "db").await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn bad_updates_name_the_field_and_leave_the_stream_alone() {
    let api = TestApi::start().await;
    let body =
        json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "standard", "storage_gib": 80});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let before = api.stream_messages().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"version": "6.0"}), "/version", "no_downgrade"),
        (json!({"storage_gib": 40}), "/storage_gib", "storage_never_shrinks"),
        (json!({"version": "7.5"}), "/version", "offered_version"),
        (json!({"name": "renamed"}), "/name", "immutable"),
        (json!({"plan": 3}), "/plan", "type"),
        (json!({"config": {"profiling_level": "verbose"}}), "/config/profiling_level", "config_value"),
        (json!({"tags": []}), "/tags", "unknown_field"),
    ];
    for (patch, field, rule) in cases {
        let reply = api.call(Method::PATCH, &path, Some(&patch), &[]).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, Some(field), Some(rule));
    }
    let bad_etag = api
        .call(Method::PATCH, &path, Some(&json!({"description": "x"})), &[("if-match", "yesterday")])
        .await;
    assert_problem(&bad_etag, StatusCode::BAD_REQUEST, Some("If-Match"), Some("etag"));
    let missing = api
        .call(
            Method::PATCH,
            "/v1/projects/acme/instances/0193a0b0-0000-7000-8000-000000000000",
            Some(&json!({})),
            &[],
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND, None, None);
    assert_eq!(api.stream_messages().await, before, "nothing reached the stream");
    let unchanged = api.call(Method::PATCH, &path, Some(&json!({"version": "7.0"})), &[]).await;
    assert_eq!(unchanged.status, StatusCode::ACCEPTED, "a PATCH that changes nothing is accepted");
    assert_eq!(api.stream_messages().await, before, "and emits no event");
}

/// Edges the OpenAPI document states, as the API enforces them: ETags are quoted (RFC 9110 entity-tags),
/// an empty `If-Match` sets no condition, a whole number written as `20.0` is a number, sequences in
/// headers stay within `int64`, and a project that is not a DNS-1123 label is refused on every route.
#[tokio::test]
async fn the_documented_edges_hold() {
    let api = TestApi::start().await;
    let body = json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "standard",
                      "storage_gib": 80.0, "config": {"slow_op_threshold_ms": 250.0}});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    // serde would read an array as the struct's fields in order: an empty change that answered 202.
    let before = api.stream_messages().await;
    let array = api.call(Method::PATCH, &path, Some(&json!([null, null])), &[]).await;
    assert_problem(&array, StatusCode::UNPROCESSABLE_ENTITY, Some(""), Some("type"));
    assert_eq!(api.stream_messages().await, before);
    let fraction = api.call(Method::PATCH, &path, Some(&json!({"storage_gib": 90.5})), &[]).await;
    assert_problem(&fraction, StatusCode::UNPROCESSABLE_ENTITY, Some("/storage_gib"), Some("type"));

    let unquoted =
        api.call(Method::PATCH, &path, Some(&json!({"description": "x"})), &[("if-match", "1")]).await;
    assert_problem(&unquoted, StatusCode::BAD_REQUEST, Some("If-Match"), Some("etag"));
    let empty = api.call(Method::PATCH, &path, Some(&json!({"description": "y"})), &[("if-match", "")]).await;
    assert_eq!(empty.status, StatusCode::ACCEPTED, "an empty If-Match sets no condition: {}", empty.body);
    let weak =
        api.call(Method::PATCH, &path, Some(&json!({"description": "z"})), &[("if-match", "W/\"2\"")]).await;
    assert_eq!(weak.status, StatusCode::ACCEPTED, "{}", weak.body);

    let huge = api.call(Method::GET, &path, None, &[("cp-min-sequence", "9223372036854775808")]).await;
    assert_problem(&huge, StatusCode::BAD_REQUEST, Some("Cp-Min-Sequence"), Some("stream_sequence"));
    for route in
        ["/v1/projects/Acme/instances", "/v1/projects/-x/operations/0193a0b0-0000-7000-8000-000000000000"]
    {
        let reply = api.call(Method::GET, route, None, &[]).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, Some("/project"), Some("dns1123_label"));
    }
    let bad_name = api.call(Method::GET, "/v1/projects/acme/instances?name=Not_A_Label", None, &[]).await;
    assert_problem(&bad_name, StatusCode::BAD_REQUEST, Some("name"), Some("dns1123_label"));
}

/// One PATCH with an out-of-range value, an unknown parameter and an immutable one: one 422 naming all
/// three, and nothing reaches the stream.
#[tokio::test]
async fn one_configuration_change_names_every_bad_parameter() {
    let api = TestApi::start().await;
    let body = json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter",
                      "config": {"data_checksums": true}});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let before = api.stream_messages().await;
    let patch =
        json!({"config": {"max_connections": 100000, "shared_buffers_mb": 512, "data_checksums": false}});
    let reply = api.call(Method::PATCH, &path, Some(&patch), &[]).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    let named: Vec<(&str, &str)> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            ("/config/data_checksums", "immutable_parameter"),
            ("/config/max_connections", "config_value"),
            ("/config/shared_buffers_mb", "known_config_key"),
        ]
    );
    assert_eq!(api.stream_messages().await, before, "nothing reached the stream");
}

//! Read-your-writes across API replicas: a read carrying a write's Cp-Stream-Sequence sees that write.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use system_tests::TestApi;
use tower::ServiceExt as _;

async fn get(router: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let admin = format!("Bearer {}", system_tests::ADMIN_TOKEN);
    let mut request = Request::builder().method(Method::GET).uri(path).header("authorization", admin);
    if let Some(token) = token {
        request = request.header("cp-min-sequence", token);
    }
    let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_read_on_another_replica_with_the_token_always_sees_the_write() {
    let api = TestApi::start().await;
    let nats = api.nats_server.connect().await;
    let replica = api::AppState::start(nats, &streams::Settings::default())
        .await
        .unwrap()
        .with_tokens(system_tests::test_tokens());
    let other = api::app(replica.clone());
    let created = api.provision("acme", "db").await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    for n in 0..1000 {
        let description = format!("change {n}");
        let written = api.call(Method::PATCH, &path, Some(&json!({"description": description})), &[]).await;
        assert_eq!(written.status, StatusCode::ACCEPTED);
        let token = written.header("cp-stream-sequence").unwrap();
        let (status, body) = get(&other, &path, Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["description"], description, "try {n}: the other replica did not show the write");
    }

    // A token beyond the end of the stream was returned by no write here: refused at once (409), not
    // waited for.
    let impatient = replica.with_read_wait(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let (status, body) = get(&api::app(impatient), &path, Some("999999")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "sequence_ahead_of_stream");
    assert!(started.elapsed() < Duration::from_secs(5), "answered without waiting out the read wait");
    let (status, body) = get(&other, &path, Some("soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "Cp-Min-Sequence");
}

/// A token the stream holds but the read models have not reached (the projector is down): the read says
/// so with 503 after its bounded wait instead of answering stale data.
#[tokio::test]
async fn a_token_the_read_models_have_not_reached_is_a_503_not_stale_data() {
    let api = TestApi::start_without_projector(Duration::from_millis(100)).await;
    let created = api.provision("acme", "db").await;
    let token = created.header("cp-stream-sequence").expect("a write returns its sequence").to_owned();
    let path = "/v1/projects/acme/instances?name=db";
    let (status, body) = get(&api.router(), path, Some(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(&token), "{body}");
}

//! The SSE feed: a project's events as CloudEvents, resumable with Last-Event-ID.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use system_tests::TestApi;
use tower::ServiceExt as _;

/// An open feed: its body and the bytes not yet parsed.
struct Feed {
    body: Body,
    buffer: String,
}

impl Feed {
    async fn open(api: &TestApi, query: &str, last_event_id: Option<u64>) -> Self {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/projects/acme/events{query}"))
            .header("authorization", format!("Bearer {}", system_tests::ADMIN_TOKEN));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = api.router().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { body: response.into_body(), buffer: String::new() }
    }

    /// The next event: its id and its CloudEvent.
    async fn next(&mut self) -> (u64, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                let (Some(id), Some(data)) = (field("id: "), field("data: ")) else { continue };
                return (id.parse().unwrap(), serde_json::from_str(&data).unwrap());
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event within 5 s")
                .expect("the feed is open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_resumes_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let api = TestApi::start().await;
    let acme = api.provision("acme", "db").await;
    let other = api.provision("other", "db").await;
    let mut expected = vec![acme.header("cp-stream-sequence").unwrap().parse::<u64>().unwrap()];
    let acme_path = format!("/v1/projects/acme/instances/{}", acme.body["instance_id"].as_str().unwrap());
    let other_path = format!("/v1/projects/other/instances/{}", other.body["instance_id"].as_str().unwrap());
    let write = |path: String, n: usize| {
        let api = &api;
        async move {
            let reply =
                api.call(Method::PATCH, &path, Some(&json!({"description": format!("n{n}")})), &[]).await;
            reply.header("cp-stream-sequence").unwrap().parse::<u64>().unwrap()
        }
    };
    for n in 0..10 {
        expected.push(write(acme_path.clone(), n).await);
        write(other_path.clone(), n).await;
    }

    let mut seen = Vec::new();
    let mut feed = Feed::open(&api, "?after=0", None).await;
    for _ in 0..5 {
        let (id, event) = feed.next().await;
        assert_eq!(event["specversion"], "1.0");
        assert!(event["source"].as_str().unwrap().starts_with("/v1/projects/acme/"), "{event}");
        assert_eq!(event["type"], "com.example.cp.instance.changed");
        assert!(event["data"].get("snapshot").is_none() && event["data"]["events"].is_array());
        seen.push(id);
    }
    drop(feed); // disconnect

    for n in 10..20 {
        expected.push(write(acme_path.clone(), n).await);
        write(other_path.clone(), n).await;
    }
    let mut feed = Feed::open(&api, "", Some(*seen.last().unwrap())).await;
    while seen.len() < expected.len() {
        seen.push(feed.next().await.0);
    }
    assert_eq!(seen, expected, "every acme event once, in order, across the reconnect");
}

#[tokio::test]
async fn a_caller_holding_its_most_feeds_gets_429_until_it_closes_one() {
    let api = TestApi::start().await;
    let limited = api.state.with_limits(api::limits::CallerLimits::new(2, 1));
    let api = TestApi::with_router(api, api::app(limited));
    let open = |token: &'static str| {
        let router = api.router();
        async move {
            let request = Request::get("/v1/projects/acme/events")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap()
        }
    };
    let first = open(system_tests::ACME_VIEWER_TOKEN).await;
    let second = open(system_tests::ACME_VIEWER_TOKEN).await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let third = open(system_tests::ACME_VIEWER_TOKEN).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "5");
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    // Another caller is not held back by this one.
    assert_eq!(open(system_tests::ACME_EDITOR_TOKEN).await.status(), StatusCode::OK);
    // A client that goes away frees its place.
    drop(first);
    assert_eq!(open(system_tests::ACME_VIEWER_TOKEN).await.status(), StatusCode::OK);
    drop(second);
}

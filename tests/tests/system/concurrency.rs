//! Concurrent writers: If-Match, plain races, and Idempotency-Key.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use futures::future::join_all;
use serde_json::json;
use streams::instances::aggregate_id;
use system_tests::{Sync, TestApi};

#[tokio::test]
async fn of_fifty_patches_with_the_same_if_match_exactly_one_succeeds() {
    let api = Arc::new(TestApi::start().await);
    let created = api.provision("acme", "db").await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let replies = join_all((0..50).map(|i| {
        let (api, path) = (api.clone(), path.clone());
        async move {
            let body = json!({"description": format!("writer {i}")});
            api.call(Method::PATCH, &path, Some(&body), &[("if-match", "\"1\"")]).await
        }
    }))
    .await;
    let accepted = replies.iter().filter(|r| r.status == StatusCode::ACCEPTED).count();
    let failed = replies.iter().filter(|r| r.status == StatusCode::PRECONDITION_FAILED).count();
    assert_eq!((accepted, failed), (1, 49), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    let problem = replies.iter().find(|r| r.status == StatusCode::PRECONDITION_FAILED).unwrap();
    assert_eq!(problem.header("content-type"), Some("application/problem+json"));
    assert_eq!(problem.body["errors"][0]["field"], "If-Match");
    assert_eq!(api.get_after(&path, &replies).await.version(), 2);
}

/// Fifty unconditional PATCHes through two API replicas: within a replica they queue on the instance's
/// lock; between replicas they race, and the loser retries on the fresh version. Each accepted PATCH is
/// applied exactly once, at a version of its own; a 409 (retries exhausted) is allowed, but not for all.
#[tokio::test]
async fn fifty_unconditional_patches_each_apply_once_or_conflict() {
    let api = Arc::new(TestApi::start().await);
    let created = api.provision("acme", "db").await;
    let id = created.body["instance_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/projects/acme/instances/{id}");
    let nats = api.nats_server.connect().await;
    let other = Arc::new(
        api.replica(
            api::AppState::start(nats, &streams::Settings::default())
                .await
                .unwrap()
                .with_tokens(system_tests::test_tokens()),
        ),
    );
    let replies = join_all((0..50).map(|i| {
        let (api, other, path) = (api.clone(), other.clone(), path.clone());
        async move {
            let body = json!({"description": format!("writer {i}")});
            if i % 2 == 0 {
                api.call(Method::PATCH, &path, Some(&body), &[]).await
            } else {
                other.call(Method::PATCH, &path, Some(&body), &[]).await
            }
        }
    }))
    .await;
    let statuses = replies.iter().map(|r| r.status).collect::<Vec<_>>();
    let accepted = replies.iter().filter(|r| r.status == StatusCode::ACCEPTED).count();
    let conflicts = replies.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!(accepted + conflicts, 50, "{statuses:?}");
    assert!(accepted >= 25, "at least one replica's writers all apply, queued on its lock: {statuses:?}");
    let version = api.get_after(&path, &replies).await.version();
    let history =
        api.state.commands.store().history(&aggregate_id("acme", id.parse().unwrap())).await.unwrap();
    assert_eq!(version, history.len() as u64, "the final version is the number of events in the stream");
    assert_eq!(version, 1 + accepted as u64, "each accepted PATCH is applied exactly once");
    let mut versions: Vec<u64> =
        replies.iter().filter(|r| r.status == StatusCode::ACCEPTED).map(|r| r.version()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=version).collect::<Vec<_>>(), "every accepted PATCH produced its own version");
}

/// A retry whose first attempt landed while the read models lag (the projector is down) answers the
/// first attempt's operation, still in progress, rather than running the command again (which would
/// emit nothing and report a made-up success).
#[tokio::test]
async fn a_replayed_key_answers_the_first_operation_while_the_read_models_lag() {
    let api = TestApi::start_without_projector(std::time::Duration::from_millis(100)).await;
    let created = api.provision("acme", "db").await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let body = json!({"description": "resized"});
    let key = [("idempotency-key", "patch-1")];
    let first = api.call(Method::PATCH, &path, Some(&body), &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["state"], "in_progress");
    let again = api.call(Method::PATCH, &path, Some(&body), &key).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"], "the same operation");
    assert_eq!(again.body["state"], "in_progress", "not a made-up success: {}", again.body);
    assert_eq!(again.version(), first.version());
    assert_eq!(again.header("cp-stream-sequence"), first.header("cp-stream-sequence"));
    assert_eq!(api.stream_messages().await, 2, "the command is stored once");
}

#[tokio::test]
async fn twenty_identical_posts_with_one_idempotency_key_create_one_instance() {
    twenty_identical_posts(TestApi::start().await).await;
}

/// The same with `sync_interval: always`, where the API group-commits: the twenty claims of one key meet
/// in one batch, which the server refuses (one subject twice), and are retried alone.
#[tokio::test]
async fn twenty_identical_posts_with_one_idempotency_key_create_one_instance_when_group_committing() {
    twenty_identical_posts(TestApi::start_with(Sync::Always).await).await;
}

async fn twenty_identical_posts(api: TestApi) {
    let api = Arc::new(api);
    let body = json!({"name": "db", "service": "influxdb", "version": "2.7", "plan": "starter"});
    let replies = join_all((0..20).map(|_| {
        let (api, body) = (api.clone(), body.clone());
        async move {
            api.call(
                Method::POST,
                "/v1/projects/acme/instances",
                Some(&body),
                &[("idempotency-key", "create-db-1")],
            )
            .await
        }
    }))
    .await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::ACCEPTED),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let operation = &replies[0].body["id"];
    assert!(replies.iter().all(|r| r.body["id"] == *operation), "every reply names the same operation");
    // Read after the writes (lists are otherwise eventually consistent).
    let list = api.get_after("/v1/projects/acme/instances", &replies).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.stream_messages().await, 1);

    // Later, the same key and body still returns the original operation; another body is refused.
    let again = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("idempotency-key", "create-db-1")])
        .await;
    assert_eq!(again.body["id"], *operation);
    let other = json!({"name": "db2", "service": "influxdb", "version": "2.7", "plan": "starter"});
    let reused = api
        .call(
            Method::POST,
            "/v1/projects/acme/instances",
            Some(&other),
            &[("idempotency-key", "create-db-1")],
        )
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.body["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn an_idempotency_key_survives_a_restart_of_the_api() {
    let api = TestApi::start().await;
    let body = json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    let first =
        api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("idempotency-key", "k")]).await;
    // A second API process on the same NATS: it knows the key from the bucket, not from memory.
    let nats = api.nats_server.connect().await;
    let state = api::AppState::start(nats, &streams::Settings::default())
        .await
        .unwrap()
        .with_tokens(system_tests::test_tokens());
    let router = api::app(state);
    let request = axum::http::Request::post("/v1/projects/acme/instances")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", system_tests::ADMIN_TOKEN))
        .header("idempotency-key", "k")
        .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let second: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(second["id"], first.body["id"]);
    assert_eq!(api.stream_messages().await, 1);
}

/// A refused request forgets its key (a delete marker in the bucket), so the same key is judged afresh on
/// retry; with group commit the marker is taken over through the grouped create.
#[tokio::test]
async fn a_refused_requests_key_is_judged_afresh_on_retry_when_group_committing() {
    let api = TestApi::start_with(Sync::Always).await;
    assert_eq!(api.provision("acme", "db").await.status, StatusCode::ACCEPTED);
    let body = json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    for attempt in 0..3 {
        let reply = api
            .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("idempotency-key", "taken")])
            .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "attempt {attempt}: {}", reply.body);
    }
}

/// The same request again once JetStream's duplicate window has passed, when the message id alone would
/// no longer keep the command from being stored twice: the Idempotency-Key record (kept 30 days) answers
/// with the first operation, and nothing is stored again.
#[tokio::test]
async fn a_retry_after_the_duplicate_window_answers_the_first_operation_and_stores_nothing() {
    let api = TestApi::start().await;
    // An API on the same server whose settings shorten the event stream's duplicate window to 1 s.
    let settings =
        streams::Settings { duplicate_window: std::time::Duration::from_secs(1), ..Default::default() };
    let state = api::AppState::start(api.nats_server.connect().await, &settings)
        .await
        .unwrap()
        .with_tokens(system_tests::test_tokens());
    let api = TestApi::with_router(api, api::app(state));
    let created = api.provision("acme", "db").await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let upgrade = json!({"version": "17"});
    let first = api.call(Method::PATCH, &path, Some(&upgrade), &[("idempotency-key", "upgrade-db")]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let stored = api.stream_messages().await;
    // The window is a span of time; nothing else marks its end.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let again = api.call(Method::PATCH, &path, Some(&upgrade), &[("idempotency-key", "upgrade-db")]).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"], "the first operation, not a new one");
    assert_eq!(api.stream_messages().await, stored, "nothing stored again");
}

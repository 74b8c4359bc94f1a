//! GET → PATCH with the returned `If-Match`, as every ordinary client does it: the GET's ETag is the
//! version the client's own writes left, whether or not the read models have caught up, and whichever
//! API replica served the write.

use std::{sync::Arc, time::Duration};

use axum::http::{Method, StatusCode};
use futures::future::join_all;
use serde_json::json;
use system_tests::{Reply, TestApi};

fn instance_path(created: &Reply) -> String {
    format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().expect("instance_id"))
}

/// With the projector down, the read models never show any write: the GET still returns the desired
/// state and ETag of the client's last write, so each PATCH built on it applies.
#[tokio::test]
async fn get_then_patch_with_its_etag_applies_while_the_read_models_lag() {
    let api = TestApi::start_without_projector(Duration::from_millis(100)).await;
    let created = api.provision("acme", "db").await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let path = instance_path(&created);
    for round in 1..=20u64 {
        let got = api.call(Method::GET, &path, None, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "round {round}: {}", got.body);
        assert_eq!(got.version(), round, "round {round}: the ETag is the version of the last write");
        assert_eq!(got.body["instance_version"], round);
        if round > 1 {
            assert_eq!(got.body["description"], format!("round {}", round - 1), "the last write shows");
        }
        let etag = got.header("etag").expect("ETag").to_owned();
        let body = json!({"description": format!("round {round}")});
        let patched = api.call(Method::PATCH, &path, Some(&body), &[("if-match", &etag)]).await;
        assert_eq!(patched.status, StatusCode::ACCEPTED, "round {round}: {}", patched.body);
    }
    // Nothing was observed or projected: the status says so rather than inventing health.
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["state"], "reconciling", "{}", got.body);
}

/// A write through one replica, then GET → PATCH through another whose cache still holds the older
/// version: the GET reads the stream, and the PATCH's If-Match is judged against the stream, not the
/// stale cache.
#[tokio::test]
async fn an_etag_from_a_write_on_another_replica_is_accepted() {
    let api = TestApi::start().await;
    let created = api.provision("acme", "db").await;
    let path = instance_path(&created);
    // Warm this replica's cache at version 1.
    let first =
        api.call(Method::PATCH, &path, Some(&json!({"description": "a"})), &[("if-match", "\"1\"")]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);

    let nats = api.nats_server.connect().await;
    let other = api::AppState::start(nats, &streams::Settings::default())
        .await
        .expect("second replica")
        .with_tokens(system_tests::test_tokens());
    let other = api.replica(other);
    let moved = other.call(Method::PATCH, &path, Some(&json!({"description": "b"})), &[]).await;
    assert_eq!(moved.status, StatusCode::ACCEPTED, "{}", moved.body);
    assert_eq!(moved.version(), 3);

    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.version(), 3, "the GET shows the other replica's write");
    assert_eq!(got.body["description"], "b");
    let etag = got.header("etag").unwrap().to_owned();
    let patched =
        api.call(Method::PATCH, &path, Some(&json!({"description": "c"})), &[("if-match", &etag)]).await;
    assert_eq!(patched.status, StatusCode::ACCEPTED, "{}", patched.body);
    assert_eq!(patched.version(), 4);
}

/// Fifty clients GET the same fresh ETag and race their PATCHes with it: exactly one wins.
#[tokio::test]
async fn fifty_patches_with_one_fresh_etag_give_one_success_and_forty_nine_412() {
    let api = Arc::new(TestApi::start().await);
    let created = api.provision("acme", "db").await;
    let path = instance_path(&created);
    api.call(Method::PATCH, &path, Some(&json!({"description": "moved"})), &[]).await;
    let etag = api.call(Method::GET, &path, None, &[]).await.header("etag").unwrap().to_owned();
    assert_eq!(etag, "\"2\"");
    let replies = join_all((0..50).map(|i| {
        let (api, path, etag) = (api.clone(), path.clone(), etag.clone());
        async move {
            let body = json!({"description": format!("writer {i}")});
            api.call(Method::PATCH, &path, Some(&body), &[("if-match", &etag)]).await
        }
    }))
    .await;
    let accepted = replies.iter().filter(|r| r.status == StatusCode::ACCEPTED).count();
    let failed = replies.iter().filter(|r| r.status == StatusCode::PRECONDITION_FAILED).count();
    assert_eq!((accepted, failed), (1, 49), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
}

/// An instance that was never provisioned is 404 at once: the stream is asked, not the read models.
#[tokio::test]
async fn an_unknown_instance_is_404_without_waiting_for_the_read_models() {
    let api = TestApi::start_without_projector(Duration::from_secs(30)).await;
    // A write the read models never see.
    assert_eq!(api.provision("acme", "other").await.status, StatusCode::ACCEPTED);
    let path = format!("/v1/projects/acme/instances/{}", uuid::Uuid::now_v7());
    let got = tokio::time::timeout(Duration::from_secs(5), api.call(Method::GET, &path, None, &[]))
        .await
        .expect("a GET of an unknown instance answers without waiting out the read wait");
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
}

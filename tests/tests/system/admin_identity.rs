//! The API's and the projector's NATS identity cannot change or delete the streams it serves: the
//! internet-facing process holds `streams::identities::control_plane_permissions`, opens the topology the
//! admin made (`cp-api --migrate`), and still does its whole job.

use std::time::Duration;

use async_nats::jetstream;
use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use streams::{Settings, identities::control_plane_permissions};
use system_tests::{ADMIN_TOKEN, NatsServer};
use tower::ServiceExt as _;

#[tokio::test]
async fn the_api_s_identity_serves_but_cannot_change_or_delete_the_streams() {
    let server = NatsServer::start();
    let settings = Settings::default();
    let restricted = server.add_user(&control_plane_permissions(&settings));
    let api_nats = restricted.connect_options().connect(server.address()).await.unwrap();

    // Before the admin migrated, the API does not start, and says why.
    let error = api::AppState::open(api_nats.clone(), &settings).await.unwrap_err().to_string();
    assert!(error.contains("cp-api --migrate"), "{error}");

    // The admin (the harness's control-plane user holds every right) migrates.
    let admin = jetstream::new(server.connect().await);
    let topology = settings.apply(&admin).await.unwrap();
    let mut events = topology.events.clone();
    let before = events.info().await.unwrap().config.clone();

    // The API opens it, registers a cluster (its stream and consumer) and takes a command.
    let state = api::AppState::open(api_nats.clone(), &settings)
        .await
        .unwrap()
        .with_tokens(system_tests::test_tokens());
    let cluster = domain::Cluster { name: "eu-1".into(), region: "eu-central".into() };
    state.clusters.register(&cluster).await.expect("the API registers clusters");
    let body = serde_json::json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    let request = Request::post("/v1/projects/acme/instances")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let reply = api::app(state).oneshot(request).await.unwrap();
    assert_eq!(reply.status(), StatusCode::ACCEPTED);

    // It may not delete, purge or reconfigure the event stream, nor a bucket.
    let api_js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(api_nats);
    let mut shorter = before.clone();
    shorter.max_age = Duration::from_secs(1);
    let bucket = format!("KV_{}", settings.read_models_bucket);
    let (deleted, purged, updated, bucket_deleted) = tokio::join!(
        api_js.delete_stream(&settings.events_stream),
        async { api_js.get_stream(&settings.events_stream).await.unwrap().purge().await },
        api_js.update_stream(shorter),
        api_js.delete_stream(&bucket),
    );
    assert!(deleted.is_err() && purged.is_err() && updated.is_err() && bucket_deleted.is_err());
    let after = events.info().await.unwrap();
    assert_eq!(after.config, before, "the event stream is as the admin made it");
    assert_eq!(after.state.messages, 1, "the command is still there");
    assert!(admin.get_stream(&bucket).await.is_ok(), "the bucket is still there");
}

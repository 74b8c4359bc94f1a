//! Faults: nats-server killed with SIGKILL loses nothing acknowledged; the API answers 503 while NATS is
//! down and recovers by itself.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures::future::join_all;
use serde_json::json;
use system_tests::{Sync, TestApi};

/// How long NATS and the API get to recover after a restart.
const RECOVERY: Duration = Duration::from_secs(30);

/// Instances written to concurrently in the SIGKILL test.
const INSTANCES: usize = 50;

/// How many of the messages at `sequences` were stored as members of an atomic batch.
async fn batched_messages(api: &TestApi, sequences: impl Iterator<Item = u64>) -> usize {
    let mut batched = 0;
    for sequence in sequences {
        let message = api.state.events.direct_get(sequence).await.expect("an acknowledged message");
        batched += usize::from(message.headers.get("Nats-Batch-Id").is_some());
    }
    batched
}

#[tokio::test]
async fn acknowledged_commands_survive_sigkill_and_the_api_recovers() {
    // Shown when the test fails.
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let mut api = TestApi::start_with(Sync::Always).await;
    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        let reply = api.provision("acme", &format!("db-{i}")).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        instances.push(reply.body["instance_id"].as_str().unwrap().to_owned());
    }
    // 1,000 acknowledged commands, each remembered by its operation id and stream sequence; sent in
    // rounds of one command per instance at once, so that the API's group commit batches them.
    let mut acknowledged = Vec::new();
    for round in 0..1000 / INSTANCES {
        let replies = join_all(instances.iter().map(|id| {
            let path = format!("/v1/projects/acme/instances/{id}");
            let body = json!({"description": format!("change {round}")});
            let api = &api;
            async move { api.call(Method::PATCH, &path, Some(&body), &[]).await }
        }))
        .await;
        for reply in replies {
            assert_eq!(reply.status, StatusCode::ACCEPTED, "round {round}: {}", reply.body);
            let sequence: u64 = reply.header("cp-stream-sequence").unwrap().parse().unwrap();
            acknowledged.push((sequence, reply.body["id"].as_str().unwrap().to_owned()));
        }
    }
    let batched = batched_messages(&api, acknowledged.iter().map(|(sequence, _)| *sequence)).await;
    assert!(batched > 0, "the commands were meant to be group-committed; none were");
    let text = api.metrics_text().await;
    let reported = text.lines().find_map(|l| l.strip_prefix("cp_api_group_commit_batched_messages_total "));
    assert_eq!(
        reported.and_then(|n| n.parse().ok()),
        Some(batched),
        "the metric counts batched messages:\n{text}"
    );

    api.nats_server.kill();
    // Once the client has noticed the lost connection, writes are refused at once.
    assert!(api.wait_for_connection(false, RECOVERY).await, "client never noticed NATS died");
    let not_ready = api.call(Method::GET, "/readyz", None, &[]).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let path = format!("/v1/projects/acme/instances/{}", instances[0]);
    let started = tokio::time::Instant::now();
    let down = api.call(Method::PATCH, &path, Some(&json!({"description": "while down"})), &[]).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", down.body);
    assert_eq!(down.header("content-type"), Some("application/problem+json"));
    assert!(down.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(2), "503 is immediate, not a timeout");

    // `restart` returns once the server says it is ready; the client reconnects by itself.
    api.nats_server.restart();
    assert!(api.wait_for_connection(true, RECOVERY).await, "client never reconnected");
    let ready = api.call(Method::GET, "/readyz", None, &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "API not ready after NATS came back: {}", ready.body);

    for (sequence, operation) in &acknowledged {
        let message = api
            .state
            .events
            .direct_get(*sequence)
            .await
            .unwrap_or_else(|e| panic!("sequence {sequence} lost: {e}"));
        assert_eq!(
            message.headers.get(streams::headers::COMMAND_ID).map(|v| v.as_str()),
            Some(operation.as_str())
        );
    }
    assert_eq!(api.stream_messages().await, 1000 + INSTANCES as u64);
    let after = api.call(Method::PATCH, &path, Some(&json!({"description": "after restart"})), &[]).await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.body);
    let stored = 1 + 1000 / INSTANCES as u64;
    assert_eq!(after.version(), stored + 1, "the instance continues from its {stored} stored events");
    // The projector's write in flight when NATS died times out (JetStream's 5 s ack timeout) before it
    // reloads and catches up: wait for that, bounded, rather than for one read's 5 s.
    let written: u64 = after.header("cp-stream-sequence").unwrap().parse().unwrap();
    assert!(api.state.read_models.wait_for(written, RECOVERY).await, "the read models never caught up");
    let got = api.get_after(&path, [&after]).await;
    assert_eq!(
        got.body["description"], "after restart",
        "the read model resumed after the restart: {}",
        got.body
    );

    // The clusters' feeds are `persist_mode: async` (derived data, `streams::cluster_feed`): whatever
    // tail the kill cost them, nats-server sources again, so each ends up holding the newest message of
    // every instance of its cluster.
    let js = async_nats::jetstream::new(api.nats_server.connect().await);
    for id in &instances {
        let path = format!("/v1/projects/acme/instances/{id}");
        let cluster =
            api.call(Method::GET, &path, None, &[]).await.body["cluster"].as_str().unwrap().to_owned();
        let subject = streams::instances::instance_subject(&cluster, "acme", id.parse().unwrap());
        let newest = api.state.events.get_last_raw_message_by_subject(&subject).await.unwrap();
        let feed = js
            .get_stream(streams::cluster_feed::desired_stream_name(&streams::Settings::default(), &cluster));
        let feed = feed.await.unwrap();
        let deadline = tokio::time::Instant::now() + RECOVERY;
        loop {
            let held = feed.get_last_raw_message_by_subject(&subject).await.ok().map(|m| m.payload);
            if held.as_ref() == Some(&newest.payload) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{cluster}'s feed lost instance {id}'s newest state"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

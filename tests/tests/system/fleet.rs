//! Fleet: a cluster whose agent falls silent is marked unreachable and every instance on it reads
//! `unknown` with the reason and the time of the last heartbeat; when the agent is back, they return to
//! what the cluster reports without any command (`streams::liveness`, `projections::liveness`).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use projections::Health;
use serde_json::{Value, json};
use system_tests::TestApi;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `path` until `ready` holds for its body, at most [`WAIT`]; the last body otherwise.
async fn wait_for_body(api: &TestApi, path: &str, ready: impl Fn(&Value) -> bool) -> Result<Value, Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = api.call(Method::GET, path, None, &[]).await;
        if got.status == StatusCode::OK && ready(&got.body) {
            return Ok(got.body);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(got.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cluster<'a>(clusters: &'a Value, name: &str) -> &'a Value {
    clusters.as_array().and_then(|all| all.iter().find(|c| c["name"] == name)).expect("the cluster is listed")
}

#[tokio::test]
async fn a_silent_cluster_s_instances_read_unknown_and_return_when_its_agent_does() {
    let api = TestApi::start_with_cluster_silence(Duration::from_secs(2)).await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let body =
        json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}");
    assert!(api.wait_for_state(id, Health::Healthy, WAIT).await, "never healthy");

    // Reachable, and its agent has reported the reconcile that made the instance healthy.
    let reported = |c: &Value| {
        let eu1 = cluster(c, "eu-1");
        eu1["state"] == "reachable" && eu1["agent"]["last_reconcile"].is_string()
    };
    let clusters = wait_for_body(&api, "/v1/admin/clusters", reported)
        .await
        .unwrap_or_else(|c| panic!("eu-1 never reachable: {c:#}"));
    let eu1 = cluster(&clusters, "eu-1");
    assert_eq!(eu1["instances"], 1, "{eu1}");
    assert_eq!(eu1["agent"]["version"], env!("CARGO_PKG_VERSION"), "{eu1}");
    assert_eq!(cluster(&clusters, "eu-2")["state"], "never_seen", "no agent of eu-2 ever beat");

    // The agent stops; a change made meanwhile waits for it.
    agent.abort();
    let _ = agent.await;
    let changed = api.call(Method::PATCH, &path, Some(&json!({"plan": "standard"})), &[]).await;
    assert_eq!(changed.status, StatusCode::ACCEPTED, "{}", changed.body);
    let unknown = wait_for_body(&api, &path, |i| i["status"]["state"] == "unknown")
        .await
        .unwrap_or_else(|i| panic!("never unknown after the agent stopped: {:#}", i["status"]));
    let reason = unknown["status"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("ClusterUnreachable") && reason.contains("eu-1"), "{reason}");
    let ready = &unknown["status"]["conditions"][0];
    assert_eq!(
        (ready["type"].as_str(), ready["status"].as_str()),
        (Some("Ready"), Some("Unknown")),
        "{ready}"
    );
    let listed = api.call(Method::GET, "/v1/projects/acme/instances?state=unknown", None, &[]).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    let listed = api.call(Method::GET, "/v1/projects/acme/instances?state=reconciling", None, &[]).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0), "shown as unknown: {}", listed.body);
    let clusters = api.call(Method::GET, "/v1/admin/clusters", None, &[]).await.body;
    assert_eq!(cluster(&clusters, "eu-1")["state"], "unreachable", "{clusters}");
    let operation = format!("/v1/projects/acme/operations/{}", changed.operation_id());
    let in_progress = api.call(Method::GET, &operation, None, &[]).await;
    assert_eq!(in_progress.body["state"], "in_progress", "not failed: {}", in_progress.body);

    // The agent is back: the instance returns by itself, and the change is applied.
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    wait_for_body(&api, &path, |i| i["status"]["state"] == "healthy")
        .await
        .unwrap_or_else(|i| panic!("never healthy again: {:#}", i["status"]));
    wait_for_body(&api, &operation, |o| o["state"] == "succeeded")
        .await
        .unwrap_or_else(|o| panic!("the change never succeeded: {o:#}"));
    let clusters = api.call(Method::GET, "/v1/admin/clusters", None, &[]).await.body;
    assert_eq!(cluster(&clusters, "eu-1")["state"], "reachable", "{clusters}");
}

//! Configuration over HTTP: restart parameters show as pending a restart until the cluster has applied
//! them; a configuration the workload cannot run with fails its operation with the agent's reason and
//! leaves the instance on its last working configuration.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use k8s_sim::server::Faults;
use projections::Health;
use serde_json::{Value, json};
use system_tests::{
    TestApi,
    cluster::{agent, simulator},
};
use uuid::Uuid;

const CONVERGE: Duration = Duration::from_secs(30);

/// Provisions with a maintenance window open now, so restart-mode changes apply at once (holding them for
/// the window is `maintenance.rs`'s subject).
async fn provision(api: &TestApi, mut body: Value) -> (Uuid, String) {
    body["maintenance_window"] = super::maintenance::open_now();
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy");
    (id, format!("/v1/projects/acme/instances/{id}"))
}

/// The agent is stopped while the change is made, so what the API shows before the cluster applies it is
/// seen for certain, not raced.
#[tokio::test]
async fn a_restart_parameter_is_pending_a_restart_until_the_cluster_applied_it_and_a_dynamic_one_never_is() {
    let api = TestApi::start().await;
    let (sim, address) = simulator(Duration::from_millis(50)).await;
    let first = agent(&api, "eu-1", address).await;
    let (_, mongo) = provision(
        &api,
        json!({"name": "mongo", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"}),
    )
    .await;
    let (_, pg) = provision(
        &api,
        json!({"name": "pg", "service": "postgresql", "version": "16", "plan": "starter", "cluster": "eu-1"}),
    )
    .await;
    first.abort();
    let _ = first.await;

    let restart = api
        .call(Method::PATCH, &mongo, Some(&json!({"config": {"max_incoming_connections": 500}})), &[])
        .await;
    assert_eq!(restart.status, StatusCode::ACCEPTED, "{}", restart.body);
    let dynamic = api.call(Method::PATCH, &pg, Some(&json!({"config": {"work_mem_kib": 8192}})), &[]).await;
    assert_eq!(dynamic.status, StatusCode::ACCEPTED, "{}", dynamic.body);
    let got = api.get_after(&mongo, [&restart]).await;
    assert_eq!(got.body["status"]["aspects"]["configuration"], "reconciling");
    assert_eq!(
        got.body["status"]["pending_restart"],
        json!(["max_incoming_connections"]),
        "{}",
        got.body["status"]
    );
    let got = api.get_after(&pg, [&dynamic]).await;
    assert_eq!(got.body["status"]["aspects"]["configuration"], "reconciling");
    assert_eq!(got.body["status"].get("pending_restart"), None, "work_mem applies without a restart");

    let _second = agent(&api, "eu-1", address).await;
    assert!(
        api.wait_for_operation(restart.operation_id(), "succeeded", CONVERGE).await,
        "the restart change never applied"
    );
    assert!(
        api.wait_for_operation(dynamic.operation_id(), "succeeded", CONVERGE).await,
        "the dynamic change never applied"
    );
    let got = api.call(Method::GET, &mongo, None, &[]).await;
    assert_eq!(got.body["status"].get("pending_restart"), None, "{}", got.body["status"]);
    assert_eq!(
        got.body["observed"]["config"],
        json!({"max_incoming_connections": 500}),
        "{}",
        got.body["observed"]
    );
    let set = {
        let store = sim.store();
        let sets = store.resource_type("apps", "v1", "statefulsets").unwrap();
        serde_json::to_value(store.get(&sets, "cp-acme", "mongo").unwrap()).unwrap()
    };
    assert_eq!(
        set["spec"]["template"]["metadata"]["annotations"]["cp.example.com/config-hash"],
        got.body["observed"]["config_hash"],
        "the pod template carries the new configuration's hash, which rolls (restarts) the pods"
    );
    let got = api.call(Method::GET, &pg, None, &[]).await;
    assert_eq!(got.body["observed"]["config"], json!({"work_mem_kib": 8192}));
}

/// A configuration the workload cannot run with: the operation fails with the agent's reason, the
/// instance still shows the configuration it last ran with, and a PATCH back recovers it.
#[tokio::test]
async fn a_configuration_the_workload_fails_with_fails_its_operation_and_shows_the_last_working_one() {
    let api = TestApi::start().await;
    let (sim, address) = simulator(Duration::from_millis(50)).await;
    let _agent = agent(&api, "eu-1", address).await;
    let (_, path) = provision(
        &api,
        json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1",
            "config": {"slow_op_threshold_ms": 100}}),
    )
    .await;
    let working = api.call(Method::GET, &path, None, &[]).await.body["observed"].clone();

    sim.set_faults(Faults { crash_loop: vec!["db".into()], ..Faults::default() });
    let bad =
        api.call(Method::PATCH, &path, Some(&json!({"config": {"slow_op_threshold_ms": 0}})), &[]).await;
    assert!(api.wait_for_operation(bad.operation_id(), "failed", CONVERGE).await, "the change never failed");
    let operation = bad.body["id"].as_str().unwrap();
    let failed = api.call(Method::GET, &format!("/v1/projects/acme/operations/{operation}"), None, &[]).await;
    assert_eq!(failed.body["error"]["reason"], "CrashLoopBackOff", "{}", failed.body);
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["state"], "error");
    assert_eq!(got.body["status"]["aspects"]["configuration"], "error", "{}", got.body["status"]);
    assert_eq!(got.body["observed"]["config"], working["config"], "the last working configuration");
    assert_eq!(got.body["observed"]["config_hash"], working["config_hash"]);
    assert_eq!(got.body["config"], json!({"slow_op_threshold_ms": 0}), "the desired one, which failed");

    sim.set_faults(Faults::default());
    let back =
        api.call(Method::PATCH, &path, Some(&json!({"config": {"slow_op_threshold_ms": 100}})), &[]).await;
    assert!(
        api.wait_for_operation(back.operation_id(), "succeeded", CONVERGE).await,
        "reverting never succeeded"
    );
}

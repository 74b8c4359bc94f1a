//! Configuration on both backends: what a change of PostgreSQL parameters writes, and what is reported
//! as running.

use crate::common;

use common::*;
use domain::{ConfigValue, ServiceType, UpdateInstance};

/// PostgreSQL parameters go to CloudNativePG's `postgresql.parameters`, which reloads dynamic ones and
/// restarts the instances itself for the others (CloudNativePG v1.30.0 docs, *PostgreSQL Configuration*).
/// So a change writes the `Cluster` and the Job that checks the running PostgreSQL has the new values
/// (`render/pg_settings.rs`; the previous check goes): the agent never touches a pod or restarts one.
async fn a_postgresql_parameter_change_writes_the_cluster_and_its_check_only(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    cluster.converges("provisioned", |v| v.ready_at("pg", 1)).await;
    let before = cluster.writes();
    let config = [("work_mem_kib".to_owned(), Some(ConfigValue::Int(8192)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    cluster.converges("dynamic parameter applied", |v| v.ready_at("pg", version)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch clusters.postgresql.cnpg.io"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch jobs.batch"), Some(&1), "the configuration check: {changed:?}");
    let objects: u64 = changed
        .iter()
        .filter(|(k, _)| !k.starts_with("patch managedinstances.cp.example.com"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(objects, 2, "nothing but the Cluster and the check: {changed:?}");
    // Another change: another check, and the previous one goes.
    let before = cluster.writes();
    let config = [("work_mem_kib".to_owned(), Some(ConfigValue::Int(16384)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    cluster.converges("dynamic parameter applied again", |v| v.ready_at("pg", version)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch clusters.postgresql.cnpg.io"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch jobs.batch"), Some(&1), "the new check: {changed:?}");
    assert_eq!(changed.get("delete jobs.batch"), Some(&1), "the previous check: {changed:?}");
    let view = cluster.view().await;
    let pg = view.get("clusters.postgresql.cnpg.io", "pg").unwrap();
    assert_eq!(pg["spec"]["postgresql"]["parameters"]["work_mem"], "16384kB");
    let checks: Vec<String> =
        view.names("jobs.batch").into_iter().filter(|j| j.starts_with("pg-pgconf-")).collect();
    assert_eq!(checks.len(), 1, "one configuration check: {checks:?}");
    let check = view.get("jobs.batch", &checks[0]).unwrap();
    let wanted = check["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "WANTED"))
        .and_then(|e| e["value"].as_str())
        .and_then(|w| serde_json::from_str::<serde_json::Value>(w).ok())
        .unwrap_or_default();
    assert_eq!(wanted["work_mem"], "16384kB", "the check asks for the new value: {check}");
    let mi = view.managed_instance("pg").unwrap();
    assert_eq!(mi["status"]["config"]["work_mem_kib"], 16384, "the applied configuration is reported");
    cluster.assert_permitted();
}
on_both_backends!(a_postgresql_parameter_change_writes_the_cluster_and_its_check_only);

/// The configuration reported is what the running pods carry, never the desired one copied: each pod keeps
/// the config-hash annotation of the template it was made from (the StatefulSet controller replaces pods
/// of an older template, k8s.io/kubernetes v1.36 pkg/controller/statefulset/stateful_set_control.go). A
/// pod that runs another configuration (here: a pod whose annotation says so, as one made from an older
/// template would) is reported as such, and the instance is not reported as running the desired one.
async fn the_reported_configuration_is_the_one_the_ready_pods_run(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let config = [("slow_op_threshold_ms".to_owned(), Some(ConfigValue::Int(250)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    cluster.converges("configuration applied", |v| v.ready_at("mongo", version)).await;
    let view = cluster.view().await;
    let pod_hash =
        view.get("pods", "mongo-0").unwrap()["metadata"]["annotations"]["cp.example.com/config-hash"].clone();
    let mi = view.managed_instance("mongo").unwrap();
    assert_eq!(mi["status"]["configHash"], pod_hash, "the pod's configuration is reported");
    assert_eq!(mi["status"]["config"]["slow_op_threshold_ms"], 250);

    let stale = serde_json::json!({"metadata": {"annotations": {"cp.example.com/config-hash": "older"}}});
    cluster.kube.hand_edit("pods", "mongo-0", stale).await;
    cluster
        .converges("the pod's configuration reported", |v| {
            v.managed_instance("mongo").is_some_and(|mi| mi["status"]["configHash"] == "older")
        })
        .await;
    let view = cluster.view().await;
    let mi = view.managed_instance("mongo").unwrap();
    assert!(mi["status"]["config"].is_null(), "an unknown configuration runs: {}", mi["status"]);
    assert_ne!(view.phase("mongo").as_deref(), Some("Ready"), "not ready with another configuration");
    cluster.assert_permitted();
}
on_both_backends!(the_reported_configuration_is_the_one_the_ready_pods_run);

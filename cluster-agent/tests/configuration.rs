//! Configuration on both backends: what a change of PostgreSQL parameters writes.

mod common;

use common::*;
use domain::{ConfigValue, ServiceType, UpdateInstance};

/// PostgreSQL parameters go to CloudNativePG's `postgresql.parameters`, which reloads dynamic ones and
/// restarts the instances itself for the others (CloudNativePG v1.30.0 docs, *PostgreSQL Configuration*).
/// So a change writes the `Cluster` and nothing else: the agent never touches a pod or restarts one.
async fn a_postgresql_parameter_change_writes_the_cluster_only(backend: Backend) {
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
    let objects: u64 = changed
        .iter()
        .filter(|(k, _)| !k.starts_with("patch managedinstances.cp.example.com"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(objects, 1, "nothing but the Cluster: {changed:?}");
    let view = cluster.view().await;
    let pg = view.get("clusters.postgresql.cnpg.io", "pg").unwrap();
    assert_eq!(pg["spec"]["postgresql"]["parameters"]["work_mem"], "8192kB");
    let mi = view.managed_instance("pg").unwrap();
    assert_eq!(mi["status"]["config"]["work_mem_kib"], 8192, "the applied configuration is reported");
    cluster.assert_permitted();
}
on_both_backends!(a_postgresql_parameter_change_writes_the_cluster_only);

//! A PostgreSQL change is reported applied only once CloudNativePG runs it. CloudNativePG v1.30.0 reports
//! no observed generation (`api/v1/cluster_types.go`), so right after the agent applies a new spec the
//! old `Ready=True` still stands; the stand-ins on both backends model that (k8s-sim `cnpg.rs`,
//! kubeenv `cnpg.rs`), and a test can hold CloudNativePG's processing of a Cluster to look at the moment
//! in between.

use std::time::Duration;

use crate::common;

use common::*;
use domain::{ConfigValue, ServiceType, UpdateInstance};
use serde_json::Value;

/// How long the agent is watched not reporting a change that CloudNativePG has not processed. Without
/// the fix it reports it within one reconcile of the Cluster's watch event (milliseconds).
const HELD: Duration = Duration::from_secs(4);

/// The agent has seen the ManagedInstance at its current generation and written a status for it, and
/// the Cluster carries the change (`changed`).
fn change_seen(v: &View, changed: impl Fn(&Value) -> bool) -> bool {
    let (Some(mi), Some(pg)) = (v.managed_instance("pg"), v.get("clusters.postgresql.cnpg.io", "pg")) else {
        return false;
    };
    mi["status"]["conditions"][0]["observedGeneration"] == mi["metadata"]["generation"] && changed(pg)
}

fn applied(v: &View, aspect: &str) -> Option<u64> {
    v.managed_instance("pg")?["status"]["applied"][aspect].as_u64()
}

fn observed_generation(v: &View) -> Option<u64> {
    v.managed_instance("pg")?["status"]["observedGeneration"].as_u64()
}

/// A parameter only the instance manager reloads: no pod is replaced, the status does not move; the
/// change runs once the PostgreSQL runs it.
async fn a_postgresql_parameter_change_is_applied_once_its_postgresql_runs_it(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    cluster.converges("provisioned", |v| v.ready_at("pg", 1)).await;

    cluster.kube.hold_cnpg("pg").await;
    let config = [("work_mem_kib".to_owned(), Some(ConfigValue::Int(8192)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    cluster
        .converges("the parameter is in the Cluster", |v| {
            change_seen(v, |pg| pg["spec"]["postgresql"]["parameters"]["work_mem"] == "8192kB")
        })
        .await;
    let early = cluster
        .wait_until(HELD, |v| {
            applied(v, "configuration") >= Some(version) || observed_generation(v) >= Some(version)
        })
        .await;
    let view = cluster.view().await;
    let mi = view.managed_instance("pg").unwrap();
    assert!(
        !early,
        "the parameter change is reported applied before CloudNativePG processed it: {}",
        mi["status"]
    );
    assert_eq!(mi["status"]["phase"], "Progressing", "{}", mi["status"]);
    assert_ne!(mi["status"]["config"]["work_mem_kib"], 8192, "{}", mi["status"]);
    let pods_before: Vec<String> = view.names("pods").into_iter().filter(|p| p.starts_with("pg-")).collect();
    let uid_before = view.uid("pods", "pg-1").expect("CloudNativePG's instance pod pg-1");
    cluster.kube.release_cnpg("pg").await;
    cluster
        .converges("the parameter applied", |v| {
            v.ready_at("pg", version) && applied(v, "configuration") == Some(version)
        })
        .await;
    let view = cluster.view().await;
    let mi = view.managed_instance("pg").unwrap();
    assert_eq!(mi["status"]["config"]["work_mem_kib"], 8192, "{}", mi["status"]);
    assert_eq!(
        view.uid("pods", "pg-1"),
        Some(uid_before),
        "a reload-only parameter replaces no pod ({pods_before:?})"
    );
    cluster.assert_permitted();
}
on_both_backends!(a_postgresql_parameter_change_is_applied_once_its_postgresql_runs_it);

/// Resources: CloudNativePG replaces the instance pods; the change runs once they run it.
async fn a_postgresql_resources_change_is_applied_once_the_instance_pods_run_it(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    cluster.converges("provisioned", |v| v.ready_at("pg", 1)).await;
    let uid_before = cluster.view().await.uid("pods", "pg-1").expect("CloudNativePG's instance pod pg-1");
    cluster.kube.hold_cnpg("pg").await;
    let version =
        world.update(id, UpdateInstance { plan: Some("standard".into()), ..Default::default() }).await;
    cluster
        .converges("the resources are in the Cluster", |v| {
            change_seen(v, |pg| {
                pg["spec"]["resources"]["requests"]["cpu"]
                    .as_str()
                    .is_some_and(|cpu| cluster_agent::render::quantities_equal(cpu, "2000m"))
            })
        })
        .await;
    let early = cluster
        .wait_until(HELD, |v| {
            applied(v, "resources") >= Some(version) || observed_generation(v) >= Some(version)
        })
        .await;
    let view = cluster.view().await;
    let mi = view.managed_instance("pg").unwrap();
    assert!(
        !early,
        "the resources change is reported applied before CloudNativePG processed it: {}",
        mi["status"]
    );
    assert_eq!(mi["status"]["phase"], "Progressing", "{}", mi["status"]);
    cluster.kube.release_cnpg("pg").await;
    cluster
        .converges("the resources applied", |v| {
            v.ready_at("pg", version) && applied(v, "resources") == Some(version)
        })
        .await;
    let view = cluster.view().await;
    let pod = view.get("pods", "pg-1").expect("CloudNativePG's instance pod pg-1");
    let cpu = pod["spec"]["containers"][0]["resources"]["requests"]["cpu"].as_str();
    assert!(
        cpu.is_some_and(|cpu| cluster_agent::render::quantities_equal(cpu, "2000m")),
        "the pod runs them: {pod}"
    );
    assert_ne!(view.uid("pods", "pg-1"), Some(uid_before), "the instance pod was replaced");
    let claim = view.get("persistentvolumeclaims", "pg-1").expect("CloudNativePG's claim pg-1");
    assert_eq!(claim["status"]["capacity"]["storage"], "50Gi", "standard's storage: {claim}");
    cluster.assert_permitted();
}
on_both_backends!(a_postgresql_resources_change_is_applied_once_the_instance_pods_run_it);

/// Storage: CloudNativePG grows each instance's claim (`existing.go`, `reconcilePVCQuantity`); the
/// change runs once the claims report the size. With a storage class that refuses the expansion (the
/// simulator's fault: here the operator's patch is refused as anyone's would be) the instance pods are
/// replaced and the Cluster is healthy again, but the volumes stay small, and the change is not applied
/// until they grow. Simulator only: the real API server's default StorageClass here always expands.
#[tokio::test]
async fn a_postgresql_storage_change_is_applied_once_the_volumes_have_grown() {
    let world = World::start(Backend::Sim, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    cluster.converges("provisioned", |v| v.ready_at("pg", 1)).await;
    let refused = k8s_sim::server::Faults { volume_expansion_refused: true, ..Default::default() };
    cluster.kube.sim().set_faults(refused);
    let version =
        world.update(id, UpdateInstance { plan: Some("standard".into()), ..Default::default() }).await;
    let pods_run_it = |v: &View| {
        let cpu = v.get("pods", "pg-1").and_then(|p| {
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"].as_str().map(str::to_owned)
        });
        cpu.is_some_and(|cpu| cluster_agent::render::quantities_equal(&cpu, "2000m"))
    };
    cluster
        .converges("the instance pods run the new resources", |v| change_seen(v, |_| true) && pods_run_it(v))
        .await;
    let early = cluster
        .wait_until(HELD, |v| {
            applied(v, "resources") >= Some(version) || observed_generation(v) >= Some(version)
        })
        .await;
    let view = cluster.view().await;
    let claim = view.get("persistentvolumeclaims", "pg-1").expect("CloudNativePG's claim pg-1");
    assert_eq!(claim["status"]["capacity"]["storage"], "10Gi", "{claim}");
    let mi = view.managed_instance("pg").unwrap();
    assert!(!early, "the plan change is reported applied while the volume is 10Gi: {}", mi["status"]);
    cluster.kube.sim().set_faults(k8s_sim::server::Faults::default());
    cluster
        .converges("the plan applied", |v| {
            v.ready_at("pg", version) && applied(v, "resources") == Some(version)
        })
        .await;
    let view = cluster.view().await;
    let claim = view.get("persistentvolumeclaims", "pg-1").expect("CloudNativePG's claim pg-1");
    assert_eq!(claim["status"]["capacity"]["storage"], "50Gi", "{claim}");
}

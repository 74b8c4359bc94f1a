//! The agent converges instances, on the simulator and on a real Kubernetes API server.

use crate::common;

use common::*;
use domain::{ConfigValue, ServiceType, UpdateInstance};

async fn every_service_type_converges_and_reports_ready(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let services = [
        ("pg", ServiceType::Postgresql, "16"),
        ("mongo", ServiceType::Mongodb, "7.0"),
        ("influx", ServiceType::Influxdb, "2.7"),
        ("grafana", ServiceType::Grafana, "11.6"),
    ];
    for (name, service, version) in services {
        world.provision("c1", name, service, version).await;
    }
    let cluster = world.cluster("c1");
    cluster.converges("all ready", |v| services.iter().all(|(name, _, _)| v.ready_at(name, 1))).await;
    let view = cluster.view().await;
    assert!(view.get("clusters.postgresql.cnpg.io", "pg").is_some());
    for name in ["mongo", "influx", "grafana"] {
        let set = view.get("statefulsets.apps", name).unwrap_or_else(|| panic!("{name} statefulset"));
        assert_eq!(set["status"]["readyReplicas"], 1, "{name}: ready through the StatefulSet's pods");
        assert!(view.get("services", name).is_some(), "{name} service");
        assert!(view.get("configmaps", &format!("{name}-config")).is_some(), "{name} configmap");
        assert_eq!(
            view.password(name).map(|p| p.len()),
            Some(32),
            "{name}: credentials generated in the cluster"
        );
        assert!(view.get("pods", &format!("{name}-0")).is_some(), "{name}: a pod of the set");
    }
    let observed = world.observed("c1").await;
    let ready = observed
        .iter()
        .filter(|e| e["event"]["type"] == "InstanceObserved" && e["event"]["data"]["phase"] == "ready")
        .count();
    assert_eq!(ready, 4, "{observed:#?}");
    assert!(!serde_json::to_string(&observed).unwrap().contains("password"), "no credential in an event");
    cluster.assert_permitted();
}
on_both_backends!(every_service_type_converges_and_reports_ready);

async fn an_update_writes_exactly_the_affected_objects_and_deprovision_removes_everything(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let before = cluster.writes();
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "6.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    // ARCHITECTURE.md's bounds, in total per change (writes by the agent; reads come from watch caches).
    let mut changed = delta(&before, &cluster.writes());
    // Installing the CRD is the agent's start, not this instance's.
    changed.retain(|k, _| !k.contains("customresourcedefinitions"));
    // The namespace and its egress policy (once per namespace), the ManagedInstance and its finalizer,
    // two Secrets (credentials, the replica set's keyfile), and five objects (StatefulSet, ConfigMap,
    // headless Service, NetworkPolicy, the replica set's Job; no endpoint without an ACL); status as for
    // any rollout.
    assert_eq!(changed.get("patch networkpolicies.networking.k8s.io"), Some(&2), "{changed:?}");
    assert_eq!(changed.get("patch services"), Some(&1), "no endpoint without an ACL: {changed:?}");
    assert_eq!(changed.get("create secrets"), Some(&2), "{changed:?}");
    assert_eq!(changed.get("patch jobs.batch"), Some(&1), "{changed:?}");
    within_update_bound(&changed, 10, 0, 1, "provisioning");

    let before = cluster.writes();
    let version =
        world.update(id, UpdateInstance { version: Some("7.0".into()), ..Default::default() }).await;
    cluster.converges("version updated", |v| v.ready_at("mongo", version)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch statefulsets.apps"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch configmaps"), None, "{changed:?}");
    assert_eq!(changed.get("patch services"), None, "{changed:?}");
    // The replica set's Job runs in the new image: a new Job (a Job's template cannot change), and the
    // old one goes.
    assert_eq!(changed.get("patch jobs.batch"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("delete jobs.batch"), Some(&1), "{changed:?}");
    // The replica set's Job completing is one more observed step.
    within_update_bound(&changed, 3, 0, 1 + 1, "an upgrade");

    let before = cluster.writes();
    let config = [("slow_op_threshold_ms".to_owned(), Some(ConfigValue::Int(250)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    cluster.converges("configuration updated", |v| v.ready_at("mongo", version)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch configmaps"), Some(&1), "{changed:?}");
    assert_eq!(
        changed.get("patch statefulsets.apps"),
        Some(&1),
        "the pod template's config hash rolls the pods: {changed:?}"
    );
    assert_eq!(changed.get("patch services"), None, "{changed:?}");
    // The ready pods' configuration and the StatefulSet's status come through separate watches, so the
    // new configuration running on a replica can be one more observed step before the set reports it
    // ready (seen in CI: progressing, replica down, new configuration running, ready).
    within_update_bound(&changed, 2, 0, 1 + 1, "a configuration change");

    let before = cluster.writes();
    let version =
        world.update(id, UpdateInstance { plan: Some("standard".into()), ..Default::default() }).await;
    cluster.converges("plan updated", |v| v.ready_at("mongo", version)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch statefulsets.apps"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch configmaps"), None, "{changed:?}");
    // standard's storage is larger: the claim is grown once, after it is bound. The member list is the
    // same, so the replica set's Job is too. (Scaling the replica set: `replica_set.rs`.)
    within_update_bound(&changed, 1, 1, 1, "a plan change to larger resources and storage");
    let view = cluster.view().await;
    let set = view.get("statefulsets.apps", "mongo").unwrap();
    let cpu = set["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"].as_str();
    assert!(cpu.is_some_and(|cpu| cluster_agent::render::quantities_equal(cpu, "2000m")), "{cpu:?}");
    let claim = view.get("persistentvolumeclaims", "data-mongo-0").unwrap();
    assert_eq!(claim["status"]["capacity"]["storage"], "50Gi");

    let before = cluster.writes();
    world.deprovision(id).await;
    cluster
        .converges("everything removed", |v| v.owned(id).is_empty() && v.managed_instance("mongo").is_none())
        .await;
    // ARCHITECTURE.md's bound: the ManagedInstance, each object and each claim deleted once, the finalizer
    // removed once.
    let changed = delta(&before, &cluster.writes());
    for kind in [
        "statefulsets.apps",
        "services",
        "configmaps",
        "networkpolicies.networking.k8s.io",
        "managedinstances.cp.example.com",
        "jobs.batch",
    ] {
        assert_eq!(changed.get(&format!("delete {kind}")), Some(&1), "{kind}: {changed:?}");
    }
    assert_eq!(changed.get("delete secrets"), Some(&2), "credentials and keyfile: {changed:?}");
    assert_eq!(changed.get("delete persistentvolumeclaims"), Some(&1), "one per replica: {changed:?}");
    assert!(changed.get("patch managedinstances.cp.example.com").is_some_and(|n| *n <= 1), "{changed:?}");
    assert!(writes(&changed) <= 1 + 7 + 1 + 1, "deprovisioning wrote more than the bound: {changed:?}");
    let observed = world.observed("c1").await;
    assert!(
        observed.iter().any(|e| e["event"]["type"] == "InstanceRemoved"),
        "removal reported: {:?}",
        observed.iter().map(|e| e["event"]["type"].clone()).collect::<Vec<_>>()
    );
    cluster.assert_permitted();
}
on_both_backends!(an_update_writes_exactly_the_affected_objects_and_deprovision_removes_everything);

/// ARCHITECTURE.md's bound of an update: the ManagedInstance, the affected objects, one patch per claim
/// when storage grows, and a status write per observed step (progressing, each change of ready replicas
/// as pods roll, ready): at most 2 + `steps`, where `steps` counts the observed steps in between (a replica
/// rolling, a Job completing, a replica running the new configuration).
fn within_update_bound(
    changed: &std::collections::BTreeMap<String, u64>,
    affected: u64,
    grown_claims: u64,
    steps: u64,
    what: &str,
) {
    let status = changed.get("patch managedinstances.cp.example.com/status").copied().unwrap_or(0);
    let claims = changed.get("patch persistentvolumeclaims").copied().unwrap_or(0);
    assert!(
        claims <= grown_claims,
        "{what} patched claims {claims} times, bound {grown_claims}: {changed:?}"
    );
    let objects = writes(changed) - status - claims;
    assert!(objects <= 1 + affected, "{what} wrote more objects than 1 + {affected}: {changed:?}");
    assert!(status <= 2 + steps, "{what} wrote status more than 2 + {steps} times: {changed:?}");
}

/// All writes in a delta of request counts.
fn writes(changed: &std::collections::BTreeMap<String, u64>) -> u64 {
    changed.values().sum()
}

async fn a_hand_edited_statefulset_is_healed_and_the_drift_recorded(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    world.provision("c1", "grafana", ServiceType::Grafana, "11.6").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("grafana", 1)).await;
    let mut observed = world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.unwrap();
    cluster
        .kube
        .hand_edit("statefulsets.apps", "grafana", serde_json::json!({"spec": {"replicas": 5}}))
        .await;
    cluster
        .converges("replicas put back", |v| {
            v.get("statefulsets.apps", "grafana").is_some_and(|o| o["spec"]["replicas"] == 1)
        })
        .await;
    let drift = World::next_observed(&mut observed, "DriftHealed").await;
    assert_eq!(drift["event"]["data"]["objects"], serde_json::json!(["StatefulSet/grafana"]));
    // Drift is data: the field, what the control plane wants there, and what was found.
    assert_eq!(
        drift["event"]["data"]["fields"],
        serde_json::json!([{"object": "StatefulSet/grafana", "path": "/spec/replicas", "desired": 1, "found": 5}])
    );
    let stored = world.observed("c1").await;
    assert!(stored.iter().any(|e| e["event"]["type"] == "DriftHealed"), "the drift event is in the stream");
    cluster.assert_permitted();
}
on_both_backends!(a_hand_edited_statefulset_is_healed_and_the_drift_recorded);

/// The ManagedInstance mirrors the control plane's decision; deleting it by hand must not delete data.
async fn a_deleted_managed_instance_of_an_active_instance_comes_back_with_its_data(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1) && v.ready_at("pg", 1)).await;
    let before = cluster.view().await;
    let claim_uid = before.uid("persistentvolumeclaims", "data-mongo-0").expect("mongo's claim");
    let secret_uid = before.uid("secrets", "mongo-credentials").expect("mongo's credentials");
    let password = before.password("mongo").unwrap();
    let pg_cluster_uid = before.uid("clusters.postgresql.cnpg.io", "pg").expect("pg's CloudNativePG cluster");
    let mi_uid = before.uid("managedinstances.cp.example.com", "mongo").unwrap();
    let mut observed = world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.unwrap();

    cluster.kube.kubectl_delete("managedinstance", "mongo").await;
    cluster.kube.kubectl_delete("managedinstance", "pg").await;
    cluster
        .converges("both mirrors restored and ready", |v| {
            v.uid("managedinstances.cp.example.com", "mongo").is_some_and(|uid| uid != mi_uid)
                && v.ready_at("mongo", 1)
                && v.ready_at("pg", 1)
        })
        .await;
    let mut named = Vec::new();
    for _ in 0..2 {
        let drift = World::next_observed(&mut observed, "DriftHealed").await;
        named.extend(drift["event"]["data"]["objects"].as_array().unwrap().iter().cloned());
    }
    named.sort_by_key(|v| v.to_string());
    assert_eq!(
        named,
        vec![serde_json::json!("ManagedInstance/mongo"), serde_json::json!("ManagedInstance/pg")]
    );
    let after = cluster.view().await;
    assert_eq!(after.uid("persistentvolumeclaims", "data-mongo-0"), Some(claim_uid), "the claim was kept");
    assert_eq!(after.uid("secrets", "mongo-credentials"), Some(secret_uid), "the credentials were kept");
    assert_eq!(after.password("mongo"), Some(password));
    assert_eq!(
        after.uid("clusters.postgresql.cnpg.io", "pg"),
        Some(pg_cluster_uid),
        "the PostgreSQL cluster was kept"
    );
    let deletes: Vec<_> = cluster.writes().into_keys().filter(|k| k.starts_with("delete ")).collect();
    assert!(deletes.is_empty(), "the agent deleted something: {deletes:?}");
    assert_eq!(world.cluster("c1").metrics.mirrors_restored.get(), 2);
    cluster.assert_permitted();
}
on_both_backends!(a_deleted_managed_instance_of_an_active_instance_comes_back_with_its_data);

async fn a_deleted_statefulset_comes_back_bound_to_the_same_claims(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let before = cluster.view().await;
    let set_uid = before.uid("statefulsets.apps", "mongo").unwrap();
    let claim_uid = before.uid("persistentvolumeclaims", "data-mongo-0").expect("claim");
    let secret_uid = before.uid("secrets", "mongo-credentials").expect("credentials");
    let mut observed = world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.unwrap();

    cluster.kube.kubectl_delete("statefulset", "mongo").await;
    let drift = World::next_observed(&mut observed, "DriftHealed").await;
    assert_eq!(drift["event"]["data"]["objects"], serde_json::json!(["StatefulSet/mongo"]));
    cluster
        .converges("a new set, ready", |v| {
            v.uid("statefulsets.apps", "mongo").is_some_and(|uid| uid != set_uid)
                && v.get("statefulsets.apps", "mongo").is_some_and(|s| s["status"]["readyReplicas"] == 1)
                && v.ready_at("mongo", 1)
        })
        .await;
    let after = cluster.view().await;
    assert_eq!(after.uid("persistentvolumeclaims", "data-mongo-0"), Some(claim_uid), "the same claim");
    assert_eq!(after.uid("secrets", "mongo-credentials"), Some(secret_uid), "the same credentials");
    let pod = after.get("pods", "mongo-0").expect("a new pod");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "data-mongo-0"),
        "the new pod mounts the old claim: {volumes:?}"
    );
    cluster.assert_permitted();
}
on_both_backends!(a_deleted_statefulset_comes_back_bound_to_the_same_claims);

async fn failing_pods_show_as_error_with_their_reason_and_recover(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    world.provision("c1", "crashing", ServiceType::Mongodb, "7.0").await;
    world.provision("c1", "unpullable", ServiceType::Mongodb, "7.0").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("crashing", 1) && v.ready_at("unpullable", 1)).await;

    cluster.kube.inject_pod_fault("crashing", common::kube_cluster::PodFault::CrashLoop).await;
    cluster
        .converges("crash loop reported", |v| {
            v.phase("crashing").as_deref() == Some("Failed")
                && v.reason("crashing").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    cluster.kube.clear_pod_faults("crashing").await;
    cluster.converges("recovered from the crash loop", |v| v.ready_at("crashing", 1)).await;

    cluster.kube.inject_pod_fault("unpullable", common::kube_cluster::PodFault::ImagePull).await;
    cluster
        .converges("image pull failure reported", |v| {
            v.phase("unpullable").as_deref() == Some("Failed")
                && v.reason("unpullable").as_deref() == Some("ImagePullBackOff")
        })
        .await;
    cluster.kube.clear_pod_faults("unpullable").await;
    cluster.converges("recovered from the image pull failure", |v| v.ready_at("unpullable", 1)).await;

    let observed = world.observed("c1").await;
    let failures: Vec<String> = observed
        .iter()
        .filter(|e| e["event"]["data"]["phase"] == "failed")
        .map(|e| e["event"]["data"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(failures.contains(&"CrashLoopBackOff".to_owned()), "{failures:?}");
    assert!(failures.contains(&"ImagePullBackOff".to_owned()), "{failures:?}");
    cluster.assert_permitted();
}
on_both_backends!(failing_pods_show_as_error_with_their_reason_and_recover);

/// Claims are resized by the cluster's volume expander (the simulator's, or the real PV controller with
/// the test provisioner playing the CSI external-resizer); a StatefulSet's volumeClaimTemplates are
/// immutable on a real API server (the simulator refuses the update the same way), so growing storage
/// must expand each replica's claim instead.
async fn storage_grows_by_expanding_each_claim_and_the_claim_template_stays_as_created(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let template_size = |v: &View| {
        v.get("statefulsets.apps", "mongo")
            .map(|o| o["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].clone())
    };
    let view = cluster.view().await;
    let created_with = template_size(&view).expect("statefulset with a claim template");
    let initial = view.get("persistentvolumeclaims", "data-mongo-0").expect("claim made from the template");
    assert_eq!(initial["status"]["capacity"]["storage"], created_with);

    let version = world.update(id, UpdateInstance { storage_gib: Some(120), ..Default::default() }).await;
    cluster.converges("storage grown", |v| v.ready_at("mongo", version)).await;
    let view = cluster.view().await;
    assert_eq!(template_size(&view), Some(created_with), "the template is never updated");
    let grown = view.get("persistentvolumeclaims", "data-mongo-0").unwrap();
    assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "120Gi");
    assert_eq!(grown["status"]["capacity"]["storage"], "120Gi", "ready only once the volume has grown");

    cluster.assert_permitted();
}
on_both_backends!(storage_grows_by_expanding_each_claim_and_the_claim_template_stays_as_created);

/// Simulator only: a StorageClass that refuses expansion is a fault the simulator injects.
#[tokio::test]
async fn a_storage_class_that_cannot_expand_fails_the_instance_until_it_can() {
    let world = World::start(Backend::Sim, &["c1"]).await;
    let id = world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    let cluster = world.cluster("c1");
    cluster.converges("provisioned", |v| v.ready_at("influx", 1)).await;
    let sim = cluster.kube.sim();
    sim.set_faults(k8s_sim::server::Faults { volume_expansion_refused: true, ..Default::default() });
    let version = world.update(id, UpdateInstance { storage_gib: Some(200), ..Default::default() }).await;
    cluster
        .converges("refusal reported", |v| v.reason("influx").as_deref() == Some("VolumeExpansionFailed"))
        .await;
    assert_eq!(cluster.view().await.phase("influx").as_deref(), Some("Failed"));

    // The administrator allows expansion: nothing in the cluster changes that the agent watches, yet it
    // tries again by itself and the instance converges.
    sim.set_faults(k8s_sim::server::Faults::default());
    cluster.converges("converged after the fix", |v| v.ready_at("influx", version)).await;
    cluster.assert_permitted();
}

/// Simulator only: two clusters (two real control planes would only repeat what one shows).
#[tokio::test]
async fn an_agent_receives_only_its_own_clusters_events() {
    let world = World::start(Backend::Sim, &["a", "b"]).await;
    for i in 0..5 {
        world.provision("a", &format!("a{i}"), ServiceType::Grafana, "11.6").await;
    }
    for i in 0..7 {
        world.provision("b", &format!("b{i}"), ServiceType::Grafana, "11.6").await;
    }
    world.cluster("a").converges("a ready", |v| (0..5).all(|i| v.ready_at(&format!("a{i}"), 1))).await;
    world.cluster("b").converges("b ready", |v| (0..7).all(|i| v.ready_at(&format!("b{i}"), 1))).await;
    let settings = &world.topology.settings;
    let stream =
        world.topology.jetstream.get_stream(streams::cluster_feed::desired_stream_name(settings, "a"));
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.await.unwrap().get_consumer(&streams::cluster_feed::agent_consumer_name("a")).await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.delivered.stream_sequence + info.num_pending,
        5,
        "agent a's feed holds cluster a's 5 instances and nothing else"
    );
    let sets = world.cluster("a").view().await.names("statefulsets.apps");
    assert_eq!(sets.len(), 5);
    assert!(sets.iter().all(|name| name.starts_with('a')));
}

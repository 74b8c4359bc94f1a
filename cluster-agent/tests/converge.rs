//! The agent converges instances in a simulated cluster.

mod common;

use common::*;
use domain::{ConfigValue, ServiceType, UpdateInstance};

#[tokio::test]
async fn every_service_type_converges_and_reports_ready() {
    let world = World::start(&["c1"]).await;
    let services = [
        ("pg", ServiceType::Postgresql, "16"),
        ("mongo", ServiceType::Mongodb, "7.0"),
        ("influx", ServiceType::Influxdb, "2.7"),
        ("grafana", ServiceType::Grafana, "11.6"),
    ];
    for (name, service, version) in services {
        world.provision("c1", name, service, version).await;
    }
    let sim = world.sim("c1");
    let converged =
        sim.wait_until(CONVERGE, |s| services.iter().all(|(name, _, _)| ready_at(s, name, 1))).await;
    assert!(
        converged,
        "not all ready: {:?}",
        services.iter().map(|(n, _, _)| phase(&sim.store(), n)).collect::<Vec<_>>()
    );
    {
        let store = sim.store();
        assert!(object(&store, "postgresql.cnpg.io", "v1", "clusters", "pg").is_some());
        for name in ["mongo", "influx", "grafana"] {
            assert!(object(&store, "apps", "v1", "statefulsets", name).is_some(), "{name} statefulset");
            assert!(object(&store, "", "v1", "services", name).is_some(), "{name} service");
            assert!(
                object(&store, "", "v1", "configmaps", &format!("{name}-config")).is_some(),
                "{name} configmap"
            );
            let secret = object(&store, "", "v1", "secrets", &format!("{name}-credentials"))
                .expect("credentials generated in the cluster");
            assert_eq!(secret["stringData"]["password"].as_str().map(str::len), Some(32));
        }
    }
    let observed = world.observed("c1").await;
    let ready = observed
        .iter()
        .filter(|e| e["event"]["type"] == "InstanceObserved" && e["event"]["data"]["phase"] == "ready")
        .count();
    assert_eq!(ready, 4, "{observed:#?}");
    assert!(!serde_json::to_string(&observed).unwrap().contains("password"), "no credential in an event");
    assert_permitted(sim);
}

#[tokio::test]
async fn an_update_writes_exactly_the_affected_objects_and_deprovision_removes_everything() {
    let world = World::start(&["c1"]).await;
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "6.0").await;
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", 1)).await);

    let before = writes(sim);
    let version =
        world.update(id, UpdateInstance { version: Some("7.0".into()), ..Default::default() }).await;
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", version)).await);
    let changed = delta(&before, &writes(sim));
    assert_eq!(changed.get("patch statefulsets.apps"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch configmaps"), None, "{changed:?}");
    assert_eq!(changed.get("patch services"), None, "{changed:?}");

    let before = writes(sim);
    let config = [("slow_op_threshold_ms".to_owned(), Some(ConfigValue::Int(250)))].into();
    let version = world.update(id, UpdateInstance { config: Some(config), ..Default::default() }).await;
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", version)).await);
    let changed = delta(&before, &writes(sim));
    assert_eq!(changed.get("patch configmaps"), Some(&1), "{changed:?}");
    assert_eq!(
        changed.get("patch statefulsets.apps"),
        Some(&1),
        "the pod template's config hash rolls the pods: {changed:?}"
    );
    assert_eq!(changed.get("patch services"), None, "{changed:?}");

    let before = writes(sim);
    let version = world.update(id, UpdateInstance { plan: Some("ha".into()), ..Default::default() }).await;
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", version)).await);
    let changed = delta(&before, &writes(sim));
    assert_eq!(changed.get("patch statefulsets.apps"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch configmaps"), None, "{changed:?}");
    let sts = object(&sim.store(), "apps", "v1", "statefulsets", "mongo").unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);

    world.deprovision(id).await;
    assert!(
        sim.wait_until(CONVERGE, |s| count_owned(s, id) == 0 && managed_instance(s, "mongo").is_none()).await,
        "everything removed"
    );
    let observed = world.observed("c1").await;
    assert!(
        observed.iter().any(|e| e["event"]["type"] == "InstanceRemoved"),
        "removal reported: {:?} {:?}",
        observed.iter().map(|e| e["event"]["type"].clone()).collect::<Vec<_>>(),
        sim.request_counts()
    );
    assert_permitted(sim);
}

fn claim_template_size(store: &k8s_sim::store::Store, name: &str) -> Option<serde_json::Value> {
    object(store, "apps", "v1", "statefulsets", name)
        .map(|o| o["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].clone())
}

fn claim(store: &k8s_sim::store::Store, name: &str) -> Option<serde_json::Value> {
    object(store, "", "v1", "persistentvolumeclaims", name)
}

/// On a real apiserver a StatefulSet's volumeClaimTemplates are immutable (the simulator refuses the
/// update the same way), so growing storage must expand each replica's claim instead.
#[tokio::test]
async fn storage_grows_by_expanding_each_claim_and_the_claim_template_stays_as_created() {
    let world = World::start(&["c1"]).await;
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", 1)).await);
    let created_with = claim_template_size(&sim.store(), "mongo").expect("statefulset with a claim template");
    let initial = claim(&sim.store(), "data-mongo-0").expect("claim made from the template");
    assert_eq!(initial["status"]["capacity"]["storage"], created_with);

    let version = world.update(id, UpdateInstance { storage_gib: Some(120), ..Default::default() }).await;
    let grown = sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", version)).await;
    {
        let store = sim.store();
        assert!(
            grown,
            "not ready at {version}: {:?}, claim {:?}",
            phase(&store, "mongo"),
            claim(&store, "data-mongo-0")
        );
        assert_eq!(claim_template_size(&store, "mongo"), Some(created_with), "the template is never updated");
        let grown = claim(&store, "data-mongo-0").unwrap();
        assert_eq!(grown["spec"]["resources"]["requests"]["storage"], "120Gi");
        assert_eq!(grown["status"]["capacity"]["storage"], "120Gi", "ready only once the volume has grown");
    }

    // A plan with more replicas: the new replicas' claims come from the old template and are grown too.
    let version = world.update(id, UpdateInstance { plan: Some("ha".into()), ..Default::default() }).await;
    assert!(
        sim.wait_until(CONVERGE, |s| ready_at(s, "mongo", version)).await,
        "{:?}",
        phase(&sim.store(), "mongo")
    );
    let store = sim.store();
    let storage = managed_instance(&store, "mongo").unwrap()["spec"]["storageGib"].as_u64().unwrap();
    for ordinal in 0..3 {
        let replica = claim(&store, &format!("data-mongo-{ordinal}")).expect("a claim per replica");
        assert_eq!(replica["status"]["capacity"]["storage"], format!("{storage}Gi"), "claim {ordinal}");
    }
    assert_permitted(sim);
}

#[tokio::test]
async fn a_storage_class_that_cannot_expand_fails_the_instance_until_it_can() {
    let world = World::start(&["c1"]).await;
    let id = world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "influx", 1)).await);
    sim.set_faults(k8s_sim::server::Faults { volume_expansion_refused: true, ..Default::default() });
    let version = world.update(id, UpdateInstance { storage_gib: Some(200), ..Default::default() }).await;
    let reason = |s: &k8s_sim::store::Store| {
        managed_instance(s, "influx").and_then(|mi| mi["status"]["reason"].as_str().map(str::to_owned))
    };
    let failed = sim.wait_until(CONVERGE, |s| reason(s).as_deref() == Some("VolumeExpansionFailed")).await;
    assert!(failed, "reported: {:?} {:?}", phase(&sim.store(), "influx"), reason(&sim.store()));
    assert_eq!(phase(&sim.store(), "influx").as_deref(), Some("Failed"));

    // The administrator allows expansion: nothing in the cluster changes that the agent watches, yet it
    // tries again by itself and the instance converges.
    sim.set_faults(k8s_sim::server::Faults::default());
    assert!(
        sim.wait_until(CONVERGE, |s| ready_at(s, "influx", version)).await,
        "{:?}",
        phase(&sim.store(), "influx")
    );
    assert_permitted(sim);
}

#[tokio::test]
async fn a_hand_edited_statefulset_is_healed_and_the_drift_recorded() {
    let world = World::start(&["c1"]).await;
    world.provision("c1", "grafana", ServiceType::Grafana, "11.6").await;
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "grafana", 1)).await);
    // Every observed-state event from now on, as it is published.
    let mut observed = world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.unwrap();
    {
        let mut store = sim.store();
        let ty = store.resource_type("apps", "v1", "statefulsets").unwrap();
        store
            .merge_patch(&ty, "cp-acme", "grafana", &serde_json::json!({"spec": {"replicas": 5}}), false)
            .unwrap();
    }
    let healed = sim
        .wait_until(CONVERGE, |s| {
            object(s, "apps", "v1", "statefulsets", "grafana").is_some_and(|o| o["spec"]["replicas"] == 1)
        })
        .await;
    assert!(healed, "replicas put back");
    let drift = loop {
        use futures::StreamExt as _;
        let message =
            tokio::time::timeout(CONVERGE, observed.next()).await.expect("a drift event in time").unwrap();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        if event["event"]["type"] == "DriftHealed" {
            break event;
        }
    };
    assert_eq!(drift["event"]["data"]["objects"], serde_json::json!(["StatefulSet/grafana"]));
    let stored = world.observed("c1").await;
    assert!(stored.iter().any(|e| e["event"]["type"] == "DriftHealed"), "the drift event is in the stream");
    assert_permitted(sim);
}

#[tokio::test]
async fn an_agent_receives_only_its_own_clusters_events() {
    let world = World::start(&["a", "b"]).await;
    for i in 0..5 {
        world.provision("a", &format!("a{i}"), ServiceType::Grafana, "11.6").await;
    }
    for i in 0..7 {
        world.provision("b", &format!("b{i}"), ServiceType::Grafana, "11.6").await;
    }
    assert!(world.sim("a").wait_until(CONVERGE, |s| (0..5).all(|i| ready_at(s, &format!("a{i}"), 1))).await);
    assert!(world.sim("b").wait_until(CONVERGE, |s| (0..7).all(|i| ready_at(s, &format!("b{i}"), 1))).await);
    let stream = world.topology.events.clone();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&cluster_agent::mirror::durable_name("a")).await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.filter_subject, "cp.evt.a.>", "filtered on the server");
    assert_eq!(
        info.delivered.consumer_sequence + info.num_pending,
        5,
        "only cluster a's 5 messages reach agent a"
    );
    let store = world.sim("a").store();
    let statefulsets = store.list(&store.resource_type("apps", "v1", "statefulsets").unwrap(), None, None);
    assert_eq!(statefulsets.len(), 5);
    assert!(statefulsets.iter().all(|o| o["metadata"]["name"].as_str().unwrap().starts_with('a')));
}

#[tokio::test]
async fn an_injected_fault_is_reported_with_its_reason_and_clearing_it_recovers() {
    let world = World::start(&["c1"]).await;
    world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "influx", 1)).await);
    sim.set_faults(k8s_sim::server::Faults { crash_loop: vec!["influx".into()], ..Default::default() });
    let failed = sim
        .wait_until(CONVERGE, |s| {
            managed_instance(s, "influx").is_some_and(|mi| {
                mi["status"]["phase"] == "Failed" && mi["status"]["reason"] == "CrashLoopBackOff"
            })
        })
        .await;
    assert!(failed, "fault not reported: {:?}", phase(&sim.store(), "influx"));
    sim.set_faults(k8s_sim::server::Faults::default());
    assert!(sim.wait_until(CONVERGE, |s| ready_at(s, "influx", 1)).await, "did not recover");
    let observed = world.observed("c1").await;
    let phases: Vec<String> = observed
        .iter()
        .filter(|e| e["event"]["type"] == "InstanceObserved")
        .map(|e| {
            format!(
                "{}{}",
                e["event"]["data"]["phase"].as_str().unwrap(),
                e["event"]["data"]["reason"].as_str().map(|r| format!(":{r}")).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        phases.ends_with(&["ready".to_owned(), "failed:CrashLoopBackOff".to_owned(), "ready".to_owned()]),
        "{phases:?}"
    );
}

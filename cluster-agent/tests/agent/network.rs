//! Network access on both backends: the ACL reaches the cluster as a NetworkPolicy and a LoadBalancer
//! Service carrying exactly its set, without touching the workload.

use crate::common;

use common::*;
use domain::{
    InstanceCommand, ServiceType,
    instance::{AclEntry, Aspect},
};
use projections::Health;
use serde_json::Value;

fn replace_acl(cidrs: &[&str], allow_public: bool) -> InstanceCommand {
    InstanceCommand::ReplaceAcl {
        entries: cidrs.iter().map(|c| AclEntry::new(*c, "")).collect(),
        allow_public,
    }
}

fn policy_blocks(view: &View, name: &str) -> Vec<String> {
    let policy =
        view.get("networkpolicies.networking.k8s.io", &format!("{name}-access")).expect("the NetworkPolicy");
    cluster_agent::render::network::admitted_blocks(policy)
}

fn instance_network_health(model: &projections::ReadModel, id: uuid::Uuid) -> Option<Health> {
    let view = model.instance("acme", id)?;
    view.status.aspects.iter().find(|(a, _)| *a == Aspect::NetworkAccess).map(|(_, h)| *h)
}

/// The network aspect's health as the API shows it, from the projector's fold of the stream now.
async fn network_health(world: &World, id: uuid::Uuid) -> Health {
    instance_network_health(&world.read_models().await, id).expect("the instance's network aspect")
}

fn source_ranges(view: &View, name: &str) -> Option<Value> {
    view.get("services", &format!("{name}-endpoint")).map(|s| s["spec"]["loadBalancerSourceRanges"].clone())
}

async fn the_reference_example_an_acl_change_reaches_the_policy_and_the_endpoint_only(backend: Backend) {
    let mut world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let view = cluster.view().await;
    assert_eq!(policy_blocks(&view, "mongo"), Vec::<String>::new(), "no ACL: only the instance's own pods");
    assert!(source_ranges(&view, "mongo").is_none(), "no ACL: no endpoint");

    let open = world.command(id, replace_acl(&["0.0.0.0/0"], true)).await;
    cluster.converges("open to everyone", |v| v.network_applied_at("mongo", open)).await;
    let view = cluster.view().await;
    assert_eq!(policy_blocks(&view, "mongo"), ["0.0.0.0/0"]);
    assert_eq!(source_ranges(&view, "mongo"), Some(serde_json::json!(["0.0.0.0/0"])));
    let endpoint = view.get("services", "mongo-endpoint").unwrap();
    assert_eq!(endpoint["spec"]["type"], "LoadBalancer");
    assert_eq!(
        endpoint["spec"]["externalTrafficPolicy"], "Local",
        "the policy must see the client's address"
    );

    // A cloud's load-balancer controller (stood in for on both backends: `k8s_sim::load_balancer`,
    // `kubeenv::load_balancer`) publishes the endpoint's address; the agent reports it, so the instance
    // shows where to connect.
    cluster
        .converges("the endpoint's address published", |v| {
            v.get("services", "mongo-endpoint")
                .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        })
        .await;
    let address =
        cluster.view().await.get("services", "mongo-endpoint").unwrap()["status"]["loadBalancer"]["ingress"]
            [0]["ip"]
            .as_str()
            .unwrap()
            .to_owned();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let model = world.read_models().await;
        let reported =
            model.instance("acme", id).and_then(|v| v.observed.as_ref()?.network.as_ref()?.endpoint.clone());
        if let Some(endpoint) = reported {
            assert_eq!((endpoint.host.as_str(), endpoint.port), (address.as_str(), 27017));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never reported the endpoint's address {address}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The reference example: desired 1.2.3.4/32, observed 0.0.0.0/0. The agent is stopped while the
    // change is made, so the status shown before the cluster applies it is seen for certain.
    assert_eq!(network_health(&world, id).await, Health::Healthy);
    let sts_before = view.get("statefulsets.apps", "mongo").unwrap()["metadata"]["resourceVersion"].clone();
    world.stop_agent(0).await;
    let narrowed = world.command(id, replace_acl(&["1.2.3.4/32"], false)).await;
    assert_eq!(
        network_health(&world, id).await,
        Health::Reconciling,
        "desired 1.2.3.4/32, observed 0.0.0.0/0"
    );
    world.start_agent(0).await;
    let cluster = world.cluster("c1");
    cluster.converges("narrowed", |v| v.network_applied_at("mongo", narrowed)).await;
    // The agent publishes what it observed (acknowledged by JetStream) before it writes the status the
    // wait above saw, so the stream already holds it.
    assert_eq!(network_health(&world, id).await, Health::Healthy, "observed the new ACL: healthy");
    let view = cluster.view().await;
    assert_eq!(policy_blocks(&view, "mongo"), ["1.2.3.4/32"], "exactly the new set");
    assert_eq!(source_ranges(&view, "mongo"), Some(serde_json::json!(["1.2.3.4/32"])), "exactly the new set");
    let mi = view.managed_instance("mongo").unwrap();
    assert_eq!(mi["status"]["acl"], serde_json::json!(["1.2.3.4/32"]), "the agent reports what it observes");
    assert_eq!(
        view.get("statefulsets.apps", "mongo").unwrap()["metadata"]["resourceVersion"],
        sts_before,
        "the workload is untouched"
    );

    // What an ACL change writes, with the agent running throughout: the two network objects only.
    let before = cluster.writes();
    let widened = world.command(id, replace_acl(&["1.2.3.4/32", "198.51.100.0/24"], false)).await;
    cluster.converges("widened", |v| v.network_applied_at("mongo", widened)).await;
    let changed = delta(&before, &cluster.writes());
    assert_eq!(changed.get("patch networkpolicies.networking.k8s.io"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch services"), Some(&1), "{changed:?}");
    assert_eq!(changed.get("patch statefulsets.apps"), None, "an ACL change rolls no pod: {changed:?}");
    assert_eq!(changed.get("patch configmaps"), None, "{changed:?}");
    assert_eq!(policy_blocks(&cluster.view().await, "mongo"), ["1.2.3.4/32", "198.51.100.0/24"]);

    let closed = world.command(id, replace_acl(&[], false)).await;
    cluster
        .converges("closed", |v| {
            v.network_applied_at("mongo", closed) && v.get("services", "mongo-endpoint").is_none()
        })
        .await;
    assert_eq!(policy_blocks(&cluster.view().await, "mongo"), Vec::<String>::new());
    let observed = world.observed("c1").await;
    let last = observed.iter().rev().find(|e| e["event"]["type"] == "InstanceObserved").unwrap();
    assert_eq!(last["event"]["data"]["network"]["acl"], serde_json::json!([]), "{last:#}");
    cluster.assert_permitted();
}
on_both_backends!(the_reference_example_an_acl_change_reaches_the_policy_and_the_endpoint_only);

async fn postgresql_s_endpoint_selects_cloudnativepg_s_primary(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    let version = world.command(id, replace_acl(&["2001:db8::/32", "198.51.100.0/24"], false)).await;
    cluster
        .converges("ready with its ACL", |v| v.ready_at("pg", version) && v.network_applied_at("pg", version))
        .await;
    let view = cluster.view().await;
    assert_eq!(policy_blocks(&view, "pg"), ["198.51.100.0/24", "2001:db8::/32"]);
    let endpoint = view.get("services", "pg-endpoint").expect("the endpoint");
    assert_eq!(endpoint["spec"]["selector"]["cnpg.io/instanceRole"], "primary");
    assert_eq!(endpoint["spec"]["ports"][0]["port"], 5432);
    cluster.assert_permitted();
}
on_both_backends!(postgresql_s_endpoint_selects_cloudnativepg_s_primary);

/// A slow rollout (pods take seconds to become ready) holds a version upgrade in progress; an ACL change
/// made after it is applied first, and the agent reports each aspect's generation on its own.
#[tokio::test]
async fn an_acl_change_is_applied_while_an_upgrade_still_rolls() {
    let world = World::start_with(Backend::Sim, &["c1"], std::time::Duration::from_secs(4)).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "mongo", ServiceType::Mongodb, "6.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let upgrade =
        world.update(id, domain::UpdateInstance { version: Some("7.0".into()), ..Default::default() }).await;
    let acl = world.command(id, replace_acl(&["1.2.3.4/32"], false)).await;
    cluster.converges("ACL applied", |v| v.network_applied_at("mongo", acl)).await;
    let view = cluster.view().await;
    let applied = &view.managed_instance("mongo").unwrap()["status"]["applied"];
    assert!(
        applied["version"].as_u64() < Some(upgrade),
        "the upgrade was still rolling when the ACL was applied: {applied}"
    );
    cluster.converges("upgraded", |v| v.ready_at("mongo", acl)).await;
    let applied = cluster.view().await.managed_instance("mongo").unwrap()["status"]["applied"].clone();
    assert_eq!(applied["version"].as_u64(), Some(upgrade), "{applied}");
}

//! The agent under faults: SIGKILL mid-converge, and an idle steady state.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use domain::ServiceType;

fn spawn_agent(world: &World, cluster: &Cluster) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
        .args([
            "--cluster",
            &cluster.name,
            "--nats-url",
            &world.nats_server.url(),
            "--kube-url",
            &cluster.url,
            "--install-crd",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster-agent binary")
}

fn password(store: &k8s_sim::store::Store, name: &str) -> Option<String> {
    object(store, "", "v1", "secrets", &format!("{name}-credentials"))
        .and_then(|s| s["stringData"]["password"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn an_agent_killed_mid_converge_converges_after_restart_with_nothing_duplicated_or_missed() {
    let world = World::without_agents(&["c1"], Duration::from_millis(50)).await;
    let cluster = &world.clusters[0];
    let mut agent = spawn_agent(&world, cluster);
    let names: Vec<String> = (0..40).map(|i| format!("db-{i}")).collect();
    let mut ids = Vec::new();
    for name in &names {
        ids.push(world.provision("c1", name, ServiceType::Grafana, "11.6").await);
    }
    // Kill it once some instances are mirrored but before all are ready.
    let partial = cluster
        .sim
        .wait_until(CONVERGE, |s| names.iter().filter(|n| managed_instance(s, n).is_some()).count() >= 5)
        .await;
    assert!(partial, "agent never started converging");
    agent.kill().expect("SIGKILL the agent");
    agent.wait().unwrap();
    let (ready_before, passwords) = {
        let store = cluster.sim.store();
        let ready = names.iter().filter(|n| ready_at(&store, n, 1)).count();
        let passwords: Vec<(String, String)> =
            names.iter().filter_map(|n| password(&store, n).map(|p| (n.clone(), p))).collect();
        (ready, passwords)
    };
    assert!(ready_before < names.len(), "killed too late to test anything: all were ready");

    let mut agent = spawn_agent(&world, cluster);
    let converged = cluster.sim.wait_until(CONVERGE, |s| names.iter().all(|n| ready_at(s, n, 1))).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(converged, "not every instance converged after the restart");
    let store = cluster.sim.store();
    for (name, id) in names.iter().zip(&ids) {
        // ManagedInstance, ConfigMap, Service, StatefulSet, Secret, and the data volume's claim that the
        // StatefulSet controller made: each exactly once.
        assert_eq!(count_owned(&store, *id), 6, "{name}");
    }
    for (name, before) in passwords {
        assert_eq!(
            password(&store, &name).as_deref(),
            Some(before.as_str()),
            "{name}'s credentials were regenerated"
        );
    }
}

#[tokio::test]
async fn an_idle_agent_makes_no_requests_besides_its_watches() {
    let world = World::start(&["c1"]).await;
    for i in 0..3 {
        world.provision("c1", &format!("db-{i}"), ServiceType::Mongodb, "7.0").await;
    }
    let sim = world.sim("c1");
    assert!(sim.wait_until(CONVERGE, |s| (0..3).all(|i| ready_at(s, &format!("db-{i}"), 1))).await);
    let before = sim.request_counts();
    // Measuring an absence over a window that ends by an event: four more bookmark rounds span at least
    // three bookmark intervals.
    let window = sim.bookmark_rounds() + 4;
    assert!(sim.wait_for_bookmark_round(window, CONVERGE).await, "the simulator sent no bookmarks");
    assert_eq!(sim.request_counts(), before, "requests made while idle");
}

//! The agent under Kubernetes API faults the simulator injects: writes refused with 409 (a lost race),
//! requests refused with 429 (API Priority and Fairness) or 500, watches answered 410 Gone (compaction),
//! and the API server down for a while. Each time the agent converges, creates nothing twice, and backs
//! off instead of looping: its requests are counted against a fault-free cluster doing the same work.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use domain::ServiceType;
use k8s_sim::server::Faults;

const INSTANCES: usize = 3;

fn total(requests: &std::collections::BTreeMap<String, u64>) -> u64 {
    requests.values().sum()
}

/// Provisions the same instances on a fault-free cluster and on one with `faults`; both converge, and the
/// faulty one made at most `bound` times the fault-free one's requests.
async fn converges_under(faults: Faults, bound: u64) {
    let mut world =
        World::without_agents(Backend::Sim, &["clean", "faulty"], Duration::from_millis(20)).await;
    world.cluster("faulty").kube.sim().set_faults(faults.clone());
    world.start_agent(0).await;
    world.start_agent(1).await;
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        world.provision("clean", &format!("clean-{i}"), ServiceType::Grafana, "11.6").await;
        ids.push(world.provision("faulty", &format!("faulty-{i}"), ServiceType::Grafana, "11.6").await);
    }
    for cluster in ["clean", "faulty"] {
        world
            .cluster(cluster)
            .converges(cluster, |v| (0..INSTANCES).all(|i| v.ready_at(&format!("{cluster}-{i}"), 1)))
            .await;
    }
    let view = world.cluster("faulty").view().await;
    for id in &ids {
        // ManagedInstance, ConfigMap, Service, StatefulSet, NetworkPolicy, Secret and the data claim.
        assert_eq!(view.owned(*id).len(), 7, "{faults:?}: each object once: {:?}", view.owned(*id));
    }
    let clean = total(&world.cluster("clean").requests.counts());
    let faulty = total(&world.cluster("faulty").requests.counts());
    eprintln!("{faults:?}: {faulty} requests against {clean} without faults");
    assert!(
        faulty <= bound * clean,
        "{faults:?}: {faulty} requests against {clean} without faults: a retry loop?"
    );
}

#[tokio::test]
async fn every_third_request_refused_with_a_conflict() {
    converges_under(Faults { fail_every_nth_request: 3, fail_with: Some(409), ..Faults::default() }, 4).await;
}

#[tokio::test]
async fn every_third_request_refused_as_too_many() {
    converges_under(Faults { fail_every_nth_request: 3, fail_with: Some(429), ..Faults::default() }, 4).await;
}

#[tokio::test]
async fn every_third_request_failing_with_a_server_error() {
    converges_under(Faults { fail_every_nth_request: 3, ..Faults::default() }, 4).await;
}

#[tokio::test]
async fn every_second_watch_answered_gone() {
    converges_under(Faults { watch_gone_every_nth: 2, ..Faults::default() }, 4).await;
}

/// The API server down for three seconds while an instance is provisioned: the agent keeps trying at a
/// bounded rate, and converges once the server is back.
#[tokio::test]
async fn an_api_server_down_for_a_while_is_retried_at_a_bounded_rate() {
    let mut world = World::without_agents(Backend::Sim, &["c1"], Duration::from_millis(20)).await;
    world.start_agent(0).await;
    world.provision("c1", "before", ServiceType::Grafana, "11.6").await;
    let cluster = world.cluster("c1");
    cluster.converges("ready before the outage", |v| v.ready_at("before", 1)).await;

    cluster.kube.sim().set_faults(Faults { down: true, ..Faults::default() });
    let before = total(&cluster.requests.counts());
    let started = Instant::now();
    world.provision("c1", "during", ServiceType::Grafana, "11.6").await;
    // The outage lasts a measured while: this is the window the rate is taken over, not a wait for an
    // event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = total(&cluster.requests.counts()) - before;
    let rate = made as f64 / started.elapsed().as_secs_f64();
    eprintln!("{made} requests in {:?} while the API server was down ({rate:.1}/s)", started.elapsed());
    assert!(made > 0, "the agent did not try while the server was down");
    assert!(rate < 20.0, "{rate:.1} requests/s against a server that is down: a retry loop");

    cluster.kube.sim().set_faults(Faults::default());
    cluster.converges("ready after the outage", |v| v.ready_at("before", 1) && v.ready_at("during", 1)).await;
}

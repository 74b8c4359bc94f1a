//! The agent under faults: SIGKILL mid-converge, an idle steady state, a message it cannot read.

use crate::common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use domain::ServiceType;
use futures::StreamExt as _;

fn spawn_agent(world: &mut World, i: usize) -> std::process::Child {
    let identity = world.agent_identity(i);
    let cluster = &world.clusters[i];
    let mut command = Command::new(env!("CARGO_BIN_EXE_cluster-agent"));
    command.args(["--cluster", &cluster.name, "--nats-url", &world.nats_server.address()]);
    command.arg("--nats-nkey").arg(&identity.seed_file);
    cluster.kube.agent_process_args(&mut command);
    command
        .env("RUST_LOG", std::env::var("CP_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(if std::env::var_os("CP_TEST_AGENT_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster-agent binary")
}

async fn an_agent_killed_mid_converge_converges_after_restart_with_nothing_duplicated_or_missed(
    backend: Backend,
) {
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(50)).await;
    let mut agent = spawn_agent(&mut world, 0);
    let cluster = &world.clusters[0];
    let count = if backend == Backend::Sim { 40 } else { 20 };
    let names: Vec<String> = (0..count).map(|i| format!("db-{i}")).collect();
    let mut ids = Vec::new();
    for name in &names {
        ids.push(world.provision("c1", name, ServiceType::Grafana, "11.6").await);
    }
    // Kill it once some instances are mirrored but before all are ready.
    cluster
        .converges("agent started converging", |v| {
            names.iter().filter(|n| v.managed_instance(n).is_some()).count() >= 5
        })
        .await;
    agent.kill().expect("SIGKILL the agent");
    agent.wait().unwrap();
    let view = cluster.view().await;
    let ready_before = names.iter().filter(|n| view.ready_at(n, 1)).count();
    let passwords: Vec<(String, String)> =
        names.iter().filter_map(|n| view.password(n).map(|p| (n.clone(), p))).collect();
    assert!(ready_before < names.len(), "killed too late to test anything: all were ready");

    let mut agent = spawn_agent(&mut world, 0);
    let cluster = &world.clusters[0];
    let converged = cluster.wait_until(CONVERGE, |v| names.iter().all(|n| v.ready_at(n, 1))).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    if !converged {
        let view = cluster.view().await;
        let behind: Vec<_> =
            names.iter().filter(|n| !view.ready_at(n, 1)).map(|n| (n, view.phase(n))).collect();
        let pods: Vec<_> = view
            .names("pods")
            .iter()
            .map(|p| (p.clone(), view.get("pods", p).unwrap()["status"]["phase"].clone()))
            .collect();
        let claims: Vec<_> = view
            .names("persistentvolumeclaims")
            .iter()
            .map(|p| (p.clone(), view.get("persistentvolumeclaims", p).unwrap()["status"]["phase"].clone()))
            .collect();
        let sets: Vec<_> = view
            .names("statefulsets.apps")
            .iter()
            .map(|p| (p.clone(), view.get("statefulsets.apps", p).unwrap()["status"].clone()))
            .collect();
        panic!(
            "not every instance converged after the restart: {behind:?}\npods {pods:?}\nclaims {claims:?}\nsets {sets:?}"
        );
    }
    let view = cluster.view().await;
    for (name, id) in names.iter().zip(&ids) {
        // ManagedInstance, ConfigMap, Service, StatefulSet, NetworkPolicy, Secret, and the data volume's
        // claim that the StatefulSet controller made: each exactly once.
        assert_eq!(view.owned(*id).len(), 7, "{name}: {:?}", view.owned(*id));
    }
    for (name, before) in passwords {
        assert_eq!(
            view.password(&name).as_deref(),
            Some(before.as_str()),
            "{name}'s credentials were regenerated"
        );
    }
}
on_both_backends!(an_agent_killed_mid_converge_converges_after_restart_with_nothing_duplicated_or_missed);

/// Idle: three rounds of the level-triggered resync re-check every instance, and none of them makes a
/// request besides the watches.
async fn an_idle_agent_makes_no_requests_besides_its_watches(backend: Backend) {
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(20)).await;
    world.start_agent_with_resync(0, Duration::from_millis(500)).await;
    for i in 0..3 {
        world.provision("c1", &format!("db-{i}"), ServiceType::Mongodb, "7.0").await;
    }
    world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    let cluster = world.cluster("c1");
    cluster
        .converges("ready", |v| (0..3).all(|i| v.ready_at(&format!("db-{i}"), 1)) && v.ready_at("pg", 1))
        .await;
    // Settled: the controllers' own status updates have been seen (one more resync round with no write).
    settled(cluster).await;
    let before = cluster.requests.counts();
    settled(cluster).await;
    let after = cluster.requests.counts();
    let made: Vec<_> = delta(&before, &after).into_keys().filter(|k| !k.starts_with("watch ")).collect();
    assert!(made.is_empty(), "requests made while idle: {made:?}");
}
on_both_backends!(an_idle_agent_makes_no_requests_besides_its_watches);

/// A restart in steady state: the agent rebuilds its desired state from the stream and re-checks every
/// instance, and since nothing changed it writes nothing: no ManagedInstance, namespace, object or status
/// (a deprovisioned instance's ManagedInstance is not deleted again either). It reads the cluster with
/// a LIST of ManagedInstances and one of its namespaces instead.
async fn a_restarted_agent_in_steady_state_writes_nothing(backend: Backend) {
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(20)).await;
    world.start_agent_with_resync(0, Duration::from_millis(500)).await;
    for i in 0..3 {
        world.provision("c1", &format!("db-{i}"), ServiceType::Mongodb, "7.0").await;
    }
    world.provision("c1", "pg", ServiceType::Postgresql, "16").await;
    let gone = world.provision("c1", "gone", ServiceType::Grafana, "11.6").await;
    let cluster = world.cluster("c1");
    cluster
        .converges("ready", |v| (0..3).all(|i| v.ready_at(&format!("db-{i}"), 1)) && v.ready_at("gone", 1))
        .await;
    world.deprovision(gone).await;
    let cluster = world.cluster("c1");
    cluster.converges("removed", |v| v.managed_instance("gone").is_none() && v.ready_at("pg", 1)).await;
    settled(cluster).await;

    world.stop_agent(0).await;
    let before = world.cluster("c1").writes();
    world.start_agent_with_resync(0, Duration::from_millis(500)).await;
    feed_drained(&world, "c1").await;
    let cluster = world.cluster("c1");
    settled(cluster).await;
    let mut written = delta(&before, &cluster.writes());
    // The test installs the CRD at every start on the simulator (production installs it from deploy/).
    written.retain(|k, _| !k.contains("customresourcedefinitions"));
    assert!(written.is_empty(), "a restart with nothing changed wrote: {written:?}");
    cluster.assert_permitted();
}
on_both_backends!(a_restarted_agent_in_steady_state_writes_nothing);

/// Poison messages on the cluster's subjects, of each kind an agent meets: not JSON, events of a type it
/// does not know with no snapshot to fall back on, and a snapshot in a format newer than it reads. An
/// agent (re)started afterwards counts each, parks a copy in the dead-letter stream naming the message
/// and the reason, skips it, and converges the instances before and after them.
#[tokio::test]
async fn poison_messages_are_counted_parked_and_skipped() {
    let mut world = World::without_agents(Backend::Sim, &["c1"], Duration::from_millis(20)).await;
    let before = world.provision("c1", "before", ServiceType::Grafana, "11.6").await;
    let js = async_nats::jetstream::new(world.nats.clone());
    let good = world
        .topology
        .events
        .get_last_raw_message_by_subject(&format!("cp.evt.c1.acme.{before}"))
        .await
        .unwrap();
    let good: serde_json::Value = serde_json::from_slice(&good.payload).unwrap();
    let mut unknown_type = good.clone();
    unknown_type["events"] = serde_json::json!([{"type": "InstanceTeleported", "schema": "1", "data": {}}]);
    unknown_type.as_object_mut().unwrap().remove("snapshot");
    // A newer build's message: its snapshot format and event schema are both beyond this agent's.
    let mut newer_snapshot = good.clone();
    newer_snapshot["snapshot"]["version"] = 99.into();
    newer_snapshot["events"][0]["schema"] = "99".into();
    let poison = [
        b"not an event batch".to_vec(),
        serde_json::to_vec(&unknown_type).unwrap(),
        serde_json::to_vec(&newer_snapshot).unwrap(),
    ];
    let mut subjects = Vec::new();
    for payload in poison {
        let subject = format!("cp.evt.c1.acme.{}", uuid::Uuid::now_v7());
        js.publish(subject.clone(), payload.into()).await.unwrap().await.expect("stored");
        subjects.push(subject);
    }
    world.provision("c1", "after", ServiceType::Grafana, "11.6").await;
    world.start_agent(0).await;
    let cluster = world.cluster("c1");
    cluster.converges("both instances ready", |v| v.ready_at("before", 1) && v.ready_at("after", 1)).await;
    assert!(cluster.metrics.undecodable_events.get() >= 3, "each counted");
    let agent = world.clusters[0].agent.as_ref().unwrap();
    assert!(!agent.is_finished(), "the agent is still running");

    let parked = streams::dead_letters::list(&js, 0, 100).await.unwrap();
    let mine: Vec<_> = parked
        .iter()
        .map(|(_, letter)| letter)
        .filter(|l| l.reader == streams::dead_letters::Reader::Agent { cluster: "c1".into() })
        .collect();
    let parked_subjects: std::collections::BTreeSet<_> = mine.iter().map(|l| l.subject.clone()).collect();
    assert_eq!(parked_subjects, subjects.iter().cloned().collect(), "each poison message parked: {mine:?}");
    assert!(mine.iter().all(|l| !l.reason.is_empty() && l.sequence > 0), "{mine:?}");
    assert!(mine.iter().any(|l| l.payload == "not an event batch"), "the copy is kept");
}

/// Waits for three more resync rounds over the four instances (bounded; fails if the agent stops).
async fn settled(cluster: &Cluster) {
    let mut reconciled = cluster.metrics.reconciled.subscribe();
    let target = *reconciled.borrow() + 4 * 3;
    tokio::time::timeout(CONVERGE, reconciled.wait_for(|n| *n >= target))
        .await
        .expect("three resync rounds within the time limit")
        .expect("the agent is running");
}

/// Waits (bounded) until the agent's consumer has delivered and had acknowledged everything in its feed.
async fn feed_drained(world: &World, cluster: &str) {
    let settings = &world.topology.settings;
    let name = streams::cluster_feed::desired_stream_name(settings, cluster);
    // Every acknowledgement the agent sends, so the check below runs again after each one.
    let mut acks =
        world.nats.subscribe(streams::cluster_feed::agent_ack_filter(settings, cluster)).await.unwrap();
    loop {
        let mut stream = world.topology.jetstream.get_stream(&name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&streams::cluster_feed::agent_consumer_name(cluster)).await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= last {
            return;
        }
        let acked = tokio::time::timeout(CONVERGE, acks.next()).await;
        assert!(matches!(acked, Ok(Some(_))), "the agent did not acknowledge its feed: {info:?}");
    }
}

/// Duplicate delivery: every message of the cluster's feed delivered to the running agent a second time
/// (its consumer rewound under it, as a lost acknowledgement would redeliver one) changes nothing in the
/// cluster and reports nothing new.
async fn every_event_delivered_again_writes_and_reports_nothing(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    for i in 0..3 {
        world.provision("c1", &format!("db-{i}"), ServiceType::Grafana, "11.6").await;
    }
    let cluster = world.cluster("c1");
    cluster.converges("ready", |v| (0..3).all(|i| v.ready_at(&format!("db-{i}"), 1))).await;
    feed_drained(&world, "c1").await;
    let observed = world.observed("c1").await.len();
    let before = cluster.writes();
    let received = cluster.metrics.events_received.get();

    streams::cluster_feed::rewind(&world.topology.jetstream, &world.topology.settings, "c1").await.unwrap();
    feed_drained(&world, "c1").await;
    assert!(cluster.metrics.events_received.get() >= received + 3, "every message was delivered again");
    let changed = delta(&before, &cluster.writes());
    assert!(changed.is_empty(), "writes caused by duplicates: {changed:?}");
    assert_eq!(world.observed("c1").await.len(), observed, "duplicates reported something");
}
on_both_backends!(every_event_delivered_again_writes_and_reports_nothing);

/// An agent offline while its cluster's instances change: one is deprovisioned (it stays, deleting, with
/// its data, until the agent is back), another upgraded. Back, the agent removes the first completely,
/// once, and converges the second to its newest state.
async fn changes_made_while_the_agent_is_offline_are_applied_when_it_returns(backend: Backend) {
    let mut world = World::start(backend, &["c1"]).await;
    let gone = world.provision("c1", "gone", ServiceType::Mongodb, "6.0").await;
    let kept = world.provision("c1", "kept", ServiceType::Mongodb, "6.0").await;
    let cluster = world.cluster("c1");
    cluster.converges("ready", |v| v.ready_at("gone", 1) && v.ready_at("kept", 1)).await;
    world.stop_agent(0).await;

    world.deprovision(gone).await;
    let upgraded = world
        .update(kept, domain::UpdateInstance { version: Some("7.0".into()), ..Default::default() })
        .await;
    let view = world.cluster("c1").view().await;
    assert!(view.managed_instance("gone").is_some(), "nothing is removed while the agent is away");
    assert!(!view.owned(gone).is_empty(), "its objects and data stay until the agent is back");

    world.start_agent(0).await;
    let cluster = world.cluster("c1");
    cluster
        .converges("removed and upgraded", |v| {
            v.owned(gone).is_empty() && v.managed_instance("gone").is_none() && v.ready_at("kept", upgraded)
        })
        .await;
    let removals = world
        .observed("c1")
        .await
        .iter()
        .filter(|e| {
            e["event"]["type"] == "InstanceRemoved" && e["event"]["data"]["instance_id"] == gone.to_string()
        })
        .count();
    assert_eq!(removals, 1, "the removal is reported once");
}
on_both_backends!(changes_made_while_the_agent_is_offline_are_applied_when_it_returns);

/// NATS unreachable from a running agent for 30 s (the server frozen: connections open, nothing answered)
/// while its instances come up: the workloads become ready meanwhile (the ManagedInstance status follows
/// only what the agent has reported, so it waits), and once NATS answers again the agent reports them, so
/// the control plane shows every instance healthy and the ManagedInstances say Ready; nothing is lost.
#[tokio::test]
async fn nats_unreachable_for_thirty_seconds_loses_nothing() {
    let world = World::start_with(Backend::Sim, &["c1"], Duration::from_secs(2)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(world.provision("c1", &format!("db-{i}"), ServiceType::Grafana, "11.6").await);
    }
    let cluster = world.cluster("c1");
    cluster.converges("mirrored", |v| (0..3).all(|i| v.managed_instance(&format!("db-{i}")).is_some())).await;

    world.nats_server.freeze();
    let frozen = std::time::Instant::now();
    // Workloads take 2 s to be ready: they become ready while NATS cannot hear about it.
    let workloads_ready = |v: &View| {
        (0..3).all(|i| {
            v.get("statefulsets.apps", &format!("db-{i}")).is_some_and(|s| s["status"]["readyReplicas"] == 1)
        })
    };
    let converged = cluster.wait_until(CONVERGE, workloads_ready).await;
    // The outage lasts its 30 s whatever happens meanwhile: a measured interval, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(frozen.elapsed())).await;
    let mut observations =
        world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.expect("observations");
    world.nats_server.thaw();
    assert!(converged, "the workloads became ready while NATS was unreachable");

    loop {
        let model = world.read_models().await;
        let healthy = ids.iter().all(|id| {
            model.instance("acme", *id).is_some_and(|v| v.status.state == projections::Health::Healthy)
        });
        if healthy {
            break;
        }
        // Checked again after each observation the agent reports.
        let reported = tokio::time::timeout(CONVERGE, observations.next()).await;
        assert!(matches!(reported, Ok(Some(_))), "not every instance reported healthy after NATS returned");
    }
    cluster.converges("ManagedInstances ready", |v| (0..3).all(|i| v.ready_at(&format!("db-{i}"), 1))).await;
    let agent = world.clusters[0].agent.as_ref().unwrap();
    assert!(!agent.is_finished(), "the agent is still running");
}

/// The backup facts (`BackupStarted`, …) the agent reported, in stream order, with their backup ids.
async fn backup_facts(world: &World) -> Vec<(String, String)> {
    world
        .observed("c1")
        .await
        .into_iter()
        .filter(|event| event["event"]["type"].as_str().is_some_and(|t| t.starts_with("Backup")))
        .map(|event| {
            let id = event["event"]["data"]["backup_id"].as_str().unwrap_or_default().to_owned();
            (event["event"]["type"].as_str().unwrap_or_default().to_owned(), id)
        })
        .collect()
}

/// SIGKILLed while a backup's Job runs (after it reported the start), the agent process reports the
/// backup's completion once after its restart: the Job is the record in the cluster, and its annotation
/// says the outcome was reported. Simulator only: it plays the Job by uploading to a real S3 server.
#[tokio::test]
async fn an_agent_sigkilled_mid_backup_reports_the_backup_exactly_once_after_restart() {
    let s3 = testkit::S3Server::start();
    // Workloads and Jobs take 1.5 s, so the agent can be killed while the Job runs.
    let mut world = World::without_agents(Backend::Sim, &["c1"], Duration::from_millis(1500)).await;
    // The control plane's answers to the agent's requests for each instance's keys.
    world.send_backups_to(&s3).await;
    let spawn = |world: &mut World| {
        let identity = world.agent_identity(0);
        let cluster = &world.clusters[0];
        let mut command = Command::new(env!("CARGO_BIN_EXE_cluster-agent"));
        command.args(["--cluster", "c1", "--nats-url", &world.nats_server.address()]);
        command.arg("--nats-nkey").arg(&identity.seed_file);
        cluster.kube.agent_process_args(&mut command);
        command
            .args([
                "--backup-store-endpoint",
                &s3.endpoint(),
                "--backup-store-bucket",
                testkit::s3::BACKUP_BUCKET,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster-agent binary")
    };
    let mut agent = spawn(&mut world);
    let id = world.provision("c1", "orders", ServiceType::Mongodb, "7.0").await;
    world.clusters[0].converges("the instance ready", |v| v.ready_at("orders", 1)).await;
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let mut observed =
        world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.expect("subscribe");

    let killed_during = request_backup(&backups, id, "orders", ServiceType::Mongodb, "7.0").await;
    World::next_observed(&mut observed, "BackupStarted").await;
    agent.kill().expect("SIGKILL the agent");
    agent.wait().unwrap();
    let job = cluster_agent::render::backup::job_name(killed_during);
    let view = world.clusters[0].view().await;
    assert!(
        view.get("jobs.batch", &job).is_some_and(|j| j["status"]["succeeded"].is_null()),
        "killed too late to test anything: the Job had ended"
    );

    let mut agent = spawn(&mut world);
    World::next_observed(&mut observed, "BackupCompleted").await;
    // Another backup after the restart: once it is reported, every pass the first one could have been
    // reported again in has run. Then one more restart, which must not report the ended ones again (the
    // process's memory is gone; the Jobs' annotations remain).
    let after = request_backup(&backups, id, "orders", ServiceType::Mongodb, "7.0").await;
    let completed = async |observed: &mut async_nats::Subscriber, backup: uuid::Uuid| loop {
        let event = World::next_observed(observed, "BackupCompleted").await;
        if event["event"]["data"]["backup_id"] == backup.to_string() {
            break;
        }
    };
    completed(&mut observed, after).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let mut agent = spawn(&mut world);
    let last = request_backup(&backups, id, "orders", ServiceType::Mongodb, "7.0").await;
    completed(&mut observed, last).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let expected: Vec<(String, String)> = [
        ("BackupStarted", killed_during),
        ("BackupCompleted", killed_during),
        ("BackupStarted", after),
        ("BackupCompleted", after),
        ("BackupStarted", last),
        ("BackupCompleted", last),
    ]
    .into_iter()
    .map(|(kind, id)| (kind.to_owned(), id.to_string()))
    .collect();
    assert_eq!(backup_facts(&world).await, expected, "each backup started and completed exactly once");
}

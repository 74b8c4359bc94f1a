//! The projector process killed with SIGKILL mid-stream, three times, each time between its record writes
//! and its checkpoint write, while commands and observations keep arriving, ends with read models equal
//! to a clean rebuild (including each record's count of folded messages): no message applied twice, none
//! missed.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use domain::{
    InstanceCommand, ProvisionInstance, ServiceType,
    instance::UpdateInstance,
    observed::{ObservedEvent, ObservedPhase, ObservedState},
};
use futures::StreamExt as _;
use projections::{Checkpoint, Projector, ProjectorMetrics, ReadModels};
use serde_json::json;
use streams::{
    CommandMetadata, Settings,
    instances::InstanceCommands,
    observed::ObservedMessage,
    read_models::{CHECKPOINT_KEY, ReadModelBucket},
};
use testkit::NatsServer;
use uuid::Uuid;

const INSTANCES: usize = 100;
const UPDATES: usize = 12_000;
/// Checkpoints past which the projector is killed (at its next flush).
const KILL_AT: [u64; 3] = [1_500, 4_000, 7_000];
const WAIT: Duration = Duration::from_secs(120);

fn spawn_projector(server: &NatsServer) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cp-projector"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("CP_NATS_URL", server.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start cp-projector")
}

/// Follows every write to the read-model bucket.
struct BucketWrites {
    watch: async_nats::jetstream::kv::Watch,
    checkpoint: u64,
}

impl BucketWrites {
    /// Waits for the next write; returns the checkpoint so far and, for a record, the stream sequence
    /// folded into it.
    async fn next(&mut self) -> (u64, Option<u64>) {
        let entry = tokio::time::timeout(WAIT, self.watch.next())
            .await
            .unwrap_or_else(|_| panic!("no write to the read-model bucket within {WAIT:?}"))
            .expect("bucket watch ended")
            .expect("bucket watch");
        if entry.key == CHECKPOINT_KEY {
            let checkpoint: Checkpoint = serde_json::from_slice(&entry.value).expect("checkpoint");
            self.checkpoint = checkpoint.sequence;
            return (self.checkpoint, None);
        }
        let record: serde_json::Value = serde_json::from_slice(&entry.value).expect("record");
        (self.checkpoint, record["sequence"].as_u64())
    }

    /// Waits until a record is written beyond a checkpoint of at least `at`: the projector is between its
    /// record writes and its checkpoint write, the moment a crash is most likely to apply something twice.
    async fn mid_flush(&mut self, at: u64) -> u64 {
        loop {
            if let (checkpoint, Some(sequence)) = self.next().await
                && checkpoint >= at
                && sequence > checkpoint
            {
                return checkpoint;
            }
        }
    }

    /// Waits until the checkpoint reaches `sequence`.
    async fn checkpoint_reaches(&mut self, sequence: u64) {
        while self.checkpoint < sequence {
            self.next().await;
        }
    }
}

/// Provisions `count` PostgreSQL instances in project `acme` on cluster `eu-1`.
async fn provision(commands: &InstanceCommands, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = Uuid::now_v7();
        let command = InstanceCommand::Provision(ProvisionInstance::new(
            id,
            "acme",
            format!("db-{n}"),
            ServiceType::Postgresql,
            "16",
            "starter",
            "eu-1",
        ));
        commands
            .provision_new(
                "acme",
                id,
                command,
                CommandMetadata::new(domain::OperationKind::Provision, "test"),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_ends_equal_to_a_clean_rebuild() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await.unwrap();
    let commands = InstanceCommands::new(&topology, 10_000);
    let ids = provision(&commands, INSTANCES).await;

    // The producer: description changes, and every tenth an observation like an agent's.
    let jetstream = topology.jetstream.clone();
    let producer = tokio::spawn({
        let (commands, ids) = (commands.clone(), ids.clone());
        async move {
            futures::stream::iter(0..UPDATES)
                .for_each_concurrent(16, |n| {
                    let (commands, jetstream, id) = (commands.clone(), jetstream.clone(), ids[n % ids.len()]);
                    async move {
                        let change =
                            UpdateInstance { description: Some(format!("change {n}")), ..Default::default() };
                        let metadata = CommandMetadata::new(domain::OperationKind::Update, "test");
                        // Concurrent changes of one instance may conflict; a conflict is simply not stored.
                        let _ = commands
                            .execute("acme", id, InstanceCommand::Update(change), None, metadata)
                            .await;
                        if n % 10 == 0 {
                            let state = ObservedState {
                                instance_id: id,
                                observed_generation: Some(1),
                                desired_generation: 1,
                                phase: if n % 20 == 0 {
                                    ObservedPhase::Ready
                                } else {
                                    ObservedPhase::Progressing
                                },
                                ready_replicas: 1,
                                desired_replicas: 1,
                                running_version: Some("16".into()),
                                config_hash: None,
                                reason: None,
                                applied: None,
                                network: None,
                                rendered: None,
                                users: None,
                                config: None,
                            };
                            let message = ObservedMessage::new(
                                "eu-1",
                                "acme",
                                id,
                                1,
                                ObservedEvent::InstanceObserved(Box::new(state)),
                            );
                            jetstream
                                .publish(message.subject(), message.to_vec().unwrap().into())
                                .await
                                .unwrap()
                                .await
                                .unwrap();
                        }
                    }
                })
                .await;
        }
    });

    // A message of an event type this version does not know, as a newer writer could produce: counted,
    // skipped, and no reason to stop.
    let unknown = json!({"aggregate_type": "instance", "aggregate_id": "acme.x", "first_version": 1,
        "events": [{"type": "InstanceTeleported", "schema": "9", "data": {}}]});
    let subject = format!("cp.evt.eu-1.acme.{}", Uuid::now_v7());
    topology
        .jetstream
        .publish(subject, serde_json::to_vec(&unknown).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let bucket = ReadModelBucket::new(&topology);
    let mut writes = BucketWrites { watch: topology.read_models.watch_all().await.unwrap(), checkpoint: 0 };
    let mut projector = spawn_projector(&server);
    for kill_at in KILL_AT {
        let checkpoint = writes.mid_flush(kill_at).await;
        projector.kill().expect("SIGKILL the projector");
        projector.wait().unwrap();
        let end = topology.events.clone().info().await.unwrap().state.last_sequence;
        assert!(checkpoint < end, "killed at checkpoint {checkpoint} of {end}: not mid-stream");
        projector = spawn_projector(&server);
    }
    producer.await.unwrap();

    let mut events = topology.events.clone();
    let last = events.info().await.unwrap().state.last_sequence;
    writes.checkpoint_reaches(last).await;
    projector.kill().unwrap();
    projector.wait().unwrap();

    let verification = projections::rebuild::verify(&topology.events, &bucket).await.unwrap();
    assert_eq!(verification.checkpoint, last);
    assert_eq!(verification.rebuilt.messages, last);
    assert!(
        verification.differences.is_empty(),
        "records differ from a clean rebuild: {:?}",
        verification.differences
    );
    assert_eq!(
        verification.rebuilt.model.skipped(),
        1,
        "the unknown event is counted (and equal in the live checkpoint)"
    );
    let (instances, operations) = verification.rebuilt.model.len();
    assert_eq!(instances, INSTANCES);
    assert!(operations > INSTANCES, "the updates are operations too");

    // The rebuild command agrees, then names a record someone changed behind the projector's back.
    let rebuild = || {
        let output = Command::new(env!("CARGO_BIN_EXE_cp-projector"))
            .arg("rebuild")
            .env("CP_NATS_URL", server.url())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run cp-projector rebuild");
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, report) = rebuild();
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains(&format!("equal to the live read models at checkpoint {last}")), "{report}");
    assert!(report.contains("events/s"), "{report}");
    let key = format!("instance.acme.{}", ids[0]);
    let mut record: serde_json::Value =
        serde_json::from_slice(&topology.read_models.get(&key).await.unwrap().unwrap()).unwrap();
    record["messages"] = json!(0);
    topology.read_models.put(&key, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
    let (code, report) = rebuild();
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("DIFFERENT from the live read models at checkpoint {last}: {key}")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_at_once_never_interleave_stale_records() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await.unwrap();
    let commands = InstanceCommands::new(&topology, 10_000);
    let bucket = ReadModelBucket::new(&topology);
    // Two projectors on the same bucket, as after a botched deployment: each write is conditional on the
    // revision its writer last saw, so the loser of each race reloads instead of overwriting newer records.
    let (first, second) = (ProjectorMetrics::default(), ProjectorMetrics::default());
    Projector::new(topology.events.clone(), bucket.clone(), first.clone()).spawn();
    Projector::new(topology.events.clone(), bucket.clone(), second.clone()).spawn();
    let read_models = ReadModels::start(bucket.clone(), WAIT).await.unwrap();
    // What a reader sees: every write of every instance record, in bucket order. A record must never go
    // back to an older stream sequence.
    let mut writes = topology.read_models.watch_all().await.unwrap();
    let (stop_at, mut stop) = tokio::sync::watch::channel(u64::MAX);
    let regressions = tokio::spawn(async move {
        let (mut newest, mut regressions, mut revision) = (std::collections::HashMap::new(), Vec::new(), 0);
        while revision < *stop.borrow_and_update() {
            let entry = tokio::select! {
                entry = writes.next() => entry.expect("bucket watch ended").expect("bucket watch"),
                _ = stop.changed() => continue,
            };
            revision = entry.revision;
            let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap_or_default();
            let Some(sequence) = record.get("sequence").and_then(serde_json::Value::as_u64) else { continue };
            let seen = newest.entry(entry.key.clone()).or_insert(0);
            if sequence < *seen {
                regressions.push(format!("{} went from sequence {seen} back to {sequence}", entry.key));
            }
            *seen = sequence.max(*seen);
        }
        regressions
    });

    let ids = provision(&commands, 20).await;
    futures::stream::iter(0..3_000)
        .for_each_concurrent(16, |n| {
            let (commands, id) = (commands.clone(), ids[n % ids.len()]);
            async move {
                let change =
                    UpdateInstance { description: Some(format!("change {n}")), ..Default::default() };
                let metadata = CommandMetadata::new(domain::OperationKind::Update, "test");
                let _ = commands.execute("acme", id, InstanceCommand::Update(change), None, metadata).await;
            }
        })
        .await;

    let last = topology.events.clone().info().await.unwrap().state.last_sequence;
    assert!(read_models.wait_for(last, WAIT).await, "the read models never reached the end of the stream");
    let verification = projections::rebuild::verify(&topology.events, &bucket).await.unwrap();
    assert!(
        verification.differences.is_empty(),
        "records differ from a clean rebuild: {:?}",
        verification.differences
    );
    assert_eq!(verification.rebuilt.messages, last);
    stop_at.send_replace(bucket.last_revision().await.unwrap());
    let regressions =
        tokio::time::timeout(WAIT, regressions).await.expect("watcher never caught up").unwrap();
    assert!(regressions.is_empty(), "readers saw records go back in time: {regressions:?}");
    assert!(
        first.restarts.get() + second.restarts.get() > 0,
        "the two projectors never raced, so this test showed nothing"
    );
}

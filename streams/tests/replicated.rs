//! The event store on a three-node JetStream cluster with three replicas, as production runs it: group
//! commit works there, and losing the stream's leader loses nothing acknowledged.

use std::time::{Duration, Instant};

use domain::{InstanceCommand, ProvisionInstance, ServiceType, UpdateInstance};
use futures::future::join_all;
use streams::{
    CommandMetadata, CommitMode, Committed, EventBatch, ExecuteError, Settings, Topology,
    instances::{InstanceCommands, aggregate_id},
};
use testkit::{NatsCluster, Sync};
use uuid::Uuid;

/// How long the cluster gets to elect leaders, at start and after a node is lost.
const ELECTION: Duration = Duration::from_secs(30);

/// Applies the topology with three replicas, asking again while the fresh cluster cannot place it.
async fn replicated_topology(cluster: &NatsCluster) -> Topology {
    let client = cluster.connect().await;
    let jetstream = async_nats::jetstream::new(client);
    let settings = Settings { replicas: 3, commit_mode: CommitMode::Grouped, ..Settings::default() };
    settings
        .apply_when_placed(&jetstream, ELECTION)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not accept the topology within {ELECTION:?}: {e}"))
}

/// Runs a command, retrying (same command id) while the cluster is unavailable, as a client retries
/// with its Idempotency-Key. A retry of a command that did land finds it applied and emits nothing.
async fn execute_retrying(
    commands: &InstanceCommands,
    id: Uuid,
    command: InstanceCommand,
    metadata: CommandMetadata,
) -> Committed<domain::Instance> {
    let started = Instant::now();
    loop {
        match commands.execute("acme", id, command.clone(), None, metadata.clone()).await {
            Ok(committed) => return committed,
            Err(ExecuteError::Unavailable(e)) if started.elapsed() < ELECTION => {
                tracing::info!(error = %e, %id, "unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("command on {id} failed: {e}"),
        }
    }
}

/// Sets the description of every instance in `ids`, concurrently.
async fn describe_all(
    commands: &InstanceCommands,
    ids: &[Uuid],
    description: &str,
) -> Vec<Committed<domain::Instance>> {
    join_all(ids.iter().map(|id| {
        let command = InstanceCommand::Update(UpdateInstance {
            description: Some(description.into()),
            ..Default::default()
        });
        execute_retrying(commands, *id, command, CommandMetadata::new(domain::OperationKind::Update, "test"))
    }))
    .await
}

// One thread: every command of a `join_all` is queued before the committer runs, so batches form.
#[tokio::test]
async fn on_three_replicas_losing_the_stream_leader_loses_nothing_acknowledged() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let mut cluster = NatsCluster::start_with(Sync::Default);
    let topology = replicated_topology(&cluster).await;
    let mut events = topology.events.clone();
    let info = events.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "the event stream is meant to have three replicas");
    let commands = InstanceCommands::new(&topology, 1000);

    let ids: Vec<Uuid> = (0..64).map(|_| Uuid::now_v7()).collect();
    let provisioned = join_all(ids.iter().enumerate().map(|(i, id)| {
        let command = InstanceCommand::Provision(ProvisionInstance::new(
            *id,
            "acme",
            format!("db-{i}"),
            ServiceType::Postgresql,
            "16",
            "starter",
            "eu-1",
        ));
        execute_retrying(
            &commands,
            *id,
            command,
            CommandMetadata::new(domain::OperationKind::Provision, "test"),
        )
    }))
    .await;
    let mut acknowledged: Vec<(u64, Uuid)> = Vec::new();
    for (committed, id) in provisioned.iter().zip(&ids) {
        acknowledged.push((committed.stream_sequence.expect("a provision emits events"), *id));
    }
    // Concurrent updates (no name reservation in front to spread them out) are group-committed.
    for (committed, id) in describe_all(&commands, &ids, "before").await.iter().zip(&ids) {
        acknowledged.push((committed.stream_sequence.expect("an update emits events"), *id));
    }
    let stats = commands.store().commit_stats().expect("a grouped store has a committer");
    let batched = stats.batched_messages.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batched > 0,
        "64 concurrent updates were meant to be group-committed on the replicated stream: {stats:?}"
    );

    // Kill the node leading the event stream: its followers hold every acknowledged message.
    let info = events.info().await.expect("stream info");
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).expect("a leader");
    let index: usize = leader.trim_start_matches('n').parse().expect("nodes are named n0..n2");
    tracing::info!(%leader, "killing the event stream's leader");
    cluster.node(index).kill();

    for (committed, id) in describe_all(&commands, &ids, "after the leader was lost").await.iter().zip(&ids) {
        // A command retried after it had landed finds itself applied: nothing new, no sequence.
        if let Some(sequence) = committed.stream_sequence {
            acknowledged.push((sequence, *id));
        }
    }

    // Every acknowledged command is where its acknowledgement said, and nothing is stored twice. Read
    // from the stream's leader: with allow_direct any replica answers direct gets, and the surviving
    // follower may still be catching up.
    for (sequence, id) in &acknowledged {
        let message = topology.events.get_raw_message(*sequence).await.unwrap_or_else(|e| {
            panic!("acknowledged message {sequence} of {id} is missing after the leader was lost: {e}")
        });
        assert!(message.subject.ends_with(&id.to_string()), "sequence {sequence} holds {}", message.subject);
    }
    for id in &ids {
        let subject = commands.store().subject("eu-1", &aggregate_id("acme", *id));
        let last = topology.events.get_last_raw_message_by_subject(&subject).await.expect("last message");
        let batch = EventBatch::from_slice(&last.payload).expect("an event batch");
        assert_eq!(batch.last_version(), 3, "{id}: one provision and two updates");
        let snapshot = batch.snapshot.expect("a snapshot");
        let instance: domain::Instance = serde_json::from_str(snapshot.state.get()).expect("the instance");
        assert_eq!(instance.spec().expect("provisioned").description, "after the leader was lost");
    }
    let info = events.info().await.expect("stream info");
    assert_eq!(info.state.messages, 3 * ids.len() as u64, "one message per command, none twice");
}

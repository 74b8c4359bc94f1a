//! The JetStream event store against a real nats-server.

use std::sync::Arc;

use domain::{
    Instance, InstanceCommand, InstanceError, InstanceEvent, Lifecycle, ProvisionInstance, ServiceType,
    UpdateInstance,
};
use futures::future::join_all;
use streams::{
    CommandMetadata, CommitMode, EventBatch, ExecuteError, Settings,
    envelope::headers,
    instances::{InstanceCommands, aggregate_id},
};
use testkit::NatsServer;
use uuid::Uuid;

async fn commands(server: &NatsServer) -> (InstanceCommands, streams::Topology) {
    commands_with(server, CommitMode::default()).await
}

async fn commands_with(server: &NatsServer, mode: CommitMode) -> (InstanceCommands, streams::Topology) {
    let client = server.connect().await;
    let settings = Settings { commit_mode: mode, ..Settings::default() };
    let topology = settings.apply(&async_nats::jetstream::new(client)).await.expect("topology");
    (InstanceCommands::new(&topology, 1000), topology)
}

fn provision(id: Uuid, name: &str) -> InstanceCommand {
    InstanceCommand::Provision(ProvisionInstance::new(
        id,
        "acme",
        name,
        ServiceType::Postgresql,
        "16",
        "starter",
        "eu-1",
    ))
}

fn describe(text: &str) -> InstanceCommand {
    InstanceCommand::Update(UpdateInstance { description: Some(text.into()), ..Default::default() })
}

fn upgrade(to: &str) -> InstanceCommand {
    InstanceCommand::Update(UpdateInstance { version: Some(to.into()), ..Default::default() })
}

fn meta(op: domain::OperationKind) -> CommandMetadata {
    CommandMetadata::new(op, "tester")
}

#[tokio::test]
async fn a_command_is_one_message_on_the_instance_subject_with_its_headers() {
    let server = NatsServer::start();
    let (commands, topology) = commands(&server).await;
    let id = Uuid::now_v7();
    let m = meta(domain::OperationKind::Provision);
    let committed = commands.execute("acme", id, provision(id, "db"), None, m.clone()).await.unwrap();
    assert_eq!(committed.version, 1);
    let update = InstanceCommand::Update(UpdateInstance {
        version: Some("17".into()),
        description: Some("two events".into()),
        ..Default::default()
    });
    let committed =
        commands.execute("acme", id, update, Some(1), meta(domain::OperationKind::Update)).await.unwrap();
    assert_eq!((committed.version, committed.stream_sequence), (3, Some(2)));

    let message = topology.events.direct_get(1).await.unwrap();
    assert_eq!(message.subject.as_str(), format!("cp.evt.eu-1.acme.{id}"));
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(headers::EVENT_TYPE).as_deref(), Some("InstanceProvisioned"));
    assert_eq!(header(headers::SCHEMA_VERSION).as_deref(), Some("1"));
    assert_eq!(header(headers::COMMAND_ID), Some(m.command_id.to_string()));
    assert_eq!(header(headers::AGGREGATE_VERSION).as_deref(), Some("1"));
    assert_eq!(header(headers::ACTOR).as_deref(), Some("tester"));
    let second = topology.events.direct_get(2).await.unwrap();
    assert_eq!(
        second.headers.get(headers::EVENT_TYPE).map(|v| v.as_str()),
        Some("VersionUpgraded,DescriptionChanged")
    );
    let batch = EventBatch::from_slice(&second.payload).unwrap();
    assert_eq!(batch.first_version, 2);
    assert_eq!(batch.decode_events::<Instance>().unwrap().len(), 2);
}

#[tokio::test]
async fn a_cold_store_loads_the_state_a_warm_one_wrote() {
    let server = NatsServer::start();
    let (writer, _) = commands(&server).await;
    let id = Uuid::now_v7();
    writer
        .execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    writer.execute("acme", id, upgrade("17"), None, meta(domain::OperationKind::Update)).await.unwrap();
    let (reader, _) = commands(&server).await;
    let (instance, version) = reader.load("acme", id).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(instance.spec().unwrap().version, "17");
    let history = reader.store().history(&aggregate_id("acme", id)).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(versions, [1, 2]);
    assert!(matches!(history[1].1, InstanceEvent::VersionUpgraded { .. }));
}

#[tokio::test]
async fn a_store_reads_through_the_jetstream_api_when_no_server_answers_direct_gets() {
    // What a client meets for a moment on a fresh replicated stream, made lasting: no direct-get
    // responder at all. Loads, fresh reads and a command still work, through the leader's API.
    let server = NatsServer::start();
    let (writer, topology) = commands(&server).await;
    let (reader, _) = commands(&server).await; // applying the settings turns direct gets on
    let id = Uuid::now_v7();
    writer
        .execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(server.connect().await);
    let mut config = topology.events.cached_info().config.clone();
    config.allow_direct = false;
    js.update_stream(config).await.expect("turn direct gets off");

    let (instance, version) = reader.load("acme", id).await.expect("a load without direct gets");
    assert_eq!((version, instance.spec().unwrap().name.as_str()), (1, "db"));
    let current = reader.read_current("acme", id).await.expect("a fresh read").expect("the instance");
    assert_eq!(current.version, 1);
    reader.execute("acme", id, upgrade("17"), Some(1), meta(domain::OperationKind::Update)).await.unwrap();
    assert_eq!(
        reader.read_current("acme", Uuid::now_v7()).await.expect("an absent instance").map(|c| c.version),
        None
    );
}

/// Replica `b` has cached an instance at version 1; replica `a` has since moved it to version 2.
async fn a_replica_with_a_stale_cache(server: &NatsServer) -> (InstanceCommands, Uuid) {
    let (a, _) = commands(server).await;
    let (b, _) = commands(server).await;
    let id = Uuid::now_v7();
    a.execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision)).await.unwrap();
    b.load("acme", id).await.unwrap(); // b caches version 1
    a.execute("acme", id, upgrade("17"), None, meta(domain::OperationKind::Update)).await.unwrap();
    (b, id)
}

#[tokio::test]
async fn a_stale_cache_in_another_process_is_caught_by_the_expected_sequence() {
    let server = NatsServer::start();
    let (b, id) = a_replica_with_a_stale_cache(&server).await;
    // b's cache says version 1; its conditional write must be refused, not applied on stale state
    let stale = b
        .execute("acme", id, InstanceCommand::Deprovision, Some(1), meta(domain::OperationKind::Deprovision))
        .await;
    assert!(matches!(stale, Err(ExecuteError::VersionMismatch { expected: 1, current: 2 })), "{stale:?}");
    // and an unconditional write is retried on fresh state
    let committed = b
        .execute("acme", id, InstanceCommand::Deprovision, None, meta(domain::OperationKind::Deprovision))
        .await
        .unwrap();
    assert_eq!(committed.version, 3);
    assert_eq!(committed.aggregate.lifecycle(), Lifecycle::Deprovisioning);
}

/// The refusal names the version the caller expected, also when its command would have emitted several
/// events (a version upgrade and a plan change at once).
#[tokio::test]
async fn a_refused_conditional_write_of_several_events_reports_the_version_the_caller_expected() {
    let server = NatsServer::start();
    let (b, id) = a_replica_with_a_stale_cache(&server).await;
    let two_events = InstanceCommand::Update(UpdateInstance {
        version: Some("17".into()),
        plan: Some("ha".into()),
        ..Default::default()
    });
    let stale = b.execute("acme", id, two_events, Some(1), meta(domain::OperationKind::Update)).await;
    assert!(matches!(stale, Err(ExecuteError::VersionMismatch { expected: 1, current: 2 })), "{stale:?}");
}

/// A command re-sent on a stale cache: JetStream refuses the stale publish by its expected sequence, and
/// the retry on fresh state finds nothing to change.
#[tokio::test]
async fn a_command_resent_on_stale_state_is_stored_once() {
    let server = NatsServer::start();
    let (a, topology) = commands(&server).await;
    let (b, _) = commands(&server).await;
    let id = Uuid::now_v7();
    a.execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision)).await.unwrap();
    b.load("acme", id).await.unwrap();
    let m = meta(domain::OperationKind::Update);
    a.execute("acme", id, upgrade("17"), None, m.clone()).await.unwrap();
    // b re-sends the same command on its stale state: JetStream refuses the stale publish, the retry on
    // fresh state finds nothing to change, and the command is stored once
    let again = b.execute("acme", id, upgrade("17"), None, m).await.unwrap();
    assert_eq!((again.version, again.stream_sequence), (2, None));
    let mut info = topology.events.clone();
    assert_eq!(info.info().await.unwrap().state.messages, 2);
}

/// A command id that already landed, run again on fresh state where it would emit events again (as a
/// command that is not idempotent does, e.g. after its first attempt's acknowledgement was lost): the
/// expected sequence matches, so only JetStream's duplicate window (`Nats-Msg-Id` = command id) keeps it
/// from being stored twice.
#[tokio::test]
async fn a_command_id_that_landed_is_not_stored_again_when_it_would_emit_again() {
    let server = NatsServer::start();
    let (a, topology) = commands(&server).await;
    let (b, _) = commands(&server).await;
    let id = Uuid::now_v7();
    a.execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision)).await.unwrap();
    let m = meta(domain::OperationKind::Update);
    let first = a.execute("acme", id, upgrade("17"), None, m.clone()).await.unwrap();
    // b has no cache: it loads version 2, and the command (standing in for one that emits every time)
    // changes something, so it is published with the right expected sequence and the same message id.
    let again = b.execute("acme", id, describe("again"), None, m).await.unwrap();
    assert!(again.duplicate, "JetStream reports the command id as already stored: {again:?}");
    assert_eq!(again.stream_sequence, first.stream_sequence);
    assert_eq!(again.version, 2, "the version the stream holds, not what the re-run would have made");
    let mut info = topology.events.clone();
    assert_eq!(info.info().await.unwrap().state.messages, 2, "stored once");
}

#[tokio::test]
async fn of_two_concurrent_provisions_of_one_name_exactly_one_wins() {
    let server = NatsServer::start();
    let (a, _) = commands(&server).await;
    let (b, _) = commands(&server).await;
    for round in 0..10 {
        let name = format!("db-{round}");
        let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
        let (rx, ry) = tokio::join!(
            a.execute("acme", x, provision(x, &name), None, meta(domain::OperationKind::Provision)),
            b.execute("acme", y, provision(y, &name), None, meta(domain::OperationKind::Provision)),
        );
        let won = [rx.is_ok(), ry.is_ok()];
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}: {rx:?} {ry:?}");
        let loser = if rx.is_ok() { ry } else { rx };
        assert!(matches!(loser, Err(ExecuteError::Rejected(InstanceError::NameTaken { .. }))));
    }
}

/// A replica that looked at an instance during its reserve → append window (and so saw it absent) must
/// not later treat that instance's reservation as abandoned: the holder is checked on the stream.
#[tokio::test]
async fn a_name_is_not_taken_over_from_a_live_holder_that_another_replica_once_saw_absent() {
    let server = NatsServer::start();
    let (a, topology) = commands(&server).await;
    let (b, _) = commands(&server).await;
    let x = Uuid::now_v7();
    let (_, version) = b.load("acme", x).await.unwrap();
    assert_eq!(version, 0, "b has seen x absent");
    a.execute("acme", x, provision(x, "db"), None, meta(domain::OperationKind::Provision)).await.unwrap();
    // The reservation as it looks long after it was made (older than the abandonment window).
    let old = serde_json::json!({"instance_id": x, "reserved_at": chrono::Utc::now() - chrono::Duration::minutes(5)});
    topology.names.put("acme.db", serde_json::to_vec(&old).unwrap().into()).await.unwrap();
    let y = Uuid::now_v7();
    let taken = b.execute("acme", y, provision(y, "db"), None, meta(domain::OperationKind::Provision)).await;
    assert!(
        matches!(taken, Err(ExecuteError::Rejected(InstanceError::NameTaken { .. }))),
        "a live instance lost its name: {taken:?}"
    );
}

#[tokio::test]
async fn a_deprovisioned_instance_releases_its_name() {
    let server = NatsServer::start();
    let (commands, _) = commands(&server).await;
    let first = Uuid::now_v7();
    commands
        .execute("acme", first, provision(first, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    commands
        .execute("acme", first, InstanceCommand::Deprovision, None, meta(domain::OperationKind::Deprovision))
        .await
        .unwrap();
    let second = Uuid::now_v7();
    commands
        .execute("acme", second, provision(second, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
}

/// Provisions instances named `shared-0` to `shared-15` concurrently.
async fn claim_shared_names(
    commands: &InstanceCommands,
) -> Vec<Result<streams::Committed<Instance>, ExecuteError<InstanceError>>> {
    join_all((0..16).map(|i| {
        let id = Uuid::now_v7();
        let name = format!("shared-{i}");
        async move {
            commands
                .execute("acme", id, provision(id, &name), None, meta(domain::OperationKind::Provision))
                .await
        }
    }))
    .await
}

#[tokio::test]
async fn grouped_name_reservations_share_batches_and_each_name_still_has_one_holder() {
    let server = NatsServer::start();
    let (a, topology) = commands_with(&server, CommitMode::Grouped).await;
    let (b, _) = commands_with(&server, CommitMode::Grouped).await;
    // Distinct names from one process: the reservations are batched on the bucket's stream.
    provision_concurrently(&a, 32).await;
    let mut names = topology.names.stream.clone();
    let last = names.info().await.unwrap().state.last_sequence;
    let mut batched = 0;
    for sequence in 1..=last {
        let message = names.direct_get(sequence).await.unwrap();
        batched += usize::from(message.headers.get("Nats-Batch-Id").is_some());
    }
    assert!(batched > 0, "32 concurrent reservations were meant to share atomic batches");
    // The same names claimed from two processes at once: exactly one claimant wins each.
    let (from_a, from_b) = tokio::join!(claim_shared_names(&a), claim_shared_names(&b));
    for (i, (ra, rb)) in from_a.into_iter().zip(from_b).enumerate() {
        assert_eq!(usize::from(ra.is_ok()) + usize::from(rb.is_ok()), 1, "shared-{i}: {ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(matches!(loser, Err(ExecuteError::Rejected(InstanceError::NameTaken { .. }))), "{loser:?}");
    }
    // A released name is taken over through the grouped path too.
    let first = Uuid::now_v7();
    a.execute("acme", first, provision(first, "reused"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    a.execute("acme", first, InstanceCommand::Deprovision, None, meta(domain::OperationKind::Deprovision))
        .await
        .unwrap();
    let second = Uuid::now_v7();
    a.execute("acme", second, provision(second, "reused"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_in_one_process_all_apply() {
    let server = NatsServer::start();
    let (commands, _) = commands(&server).await;
    let commands = Arc::new(commands);
    let id = Uuid::now_v7();
    commands
        .execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    let results = join_all((0..20).map(|i| {
        let commands = commands.clone();
        async move {
            commands
                .execute(
                    "acme",
                    id,
                    describe(&format!("change {i}")),
                    None,
                    meta(domain::OperationKind::Update),
                )
                .await
        }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(commands.load("acme", id).await.unwrap().1, 21);
}

/// Provisions `count` instances concurrently; returns each id with its command's metadata and result.
async fn provision_concurrently(
    commands: &InstanceCommands,
    count: usize,
) -> Vec<(Uuid, CommandMetadata, streams::Committed<Instance>)> {
    join_all((0..count).map(|i| async move {
        let id = Uuid::now_v7();
        let m = meta(domain::OperationKind::Provision);
        let committed = commands
            .execute("acme", id, provision(id, &format!("db-{i}")), None, m.clone())
            .await
            .unwrap_or_else(|e| panic!("provision {i}: {e}"));
        (id, m, committed)
    }))
    .await
}

#[tokio::test]
async fn group_commit_stores_each_concurrent_command_at_the_sequence_it_reports() {
    let server = NatsServer::start();
    let (commands, topology) = commands_with(&server, CommitMode::Grouped).await;
    let results = provision_concurrently(&commands, 64).await;
    let mut batched = 0;
    for (id, m, committed) in &results {
        let sequence = committed.stream_sequence.expect("a provision emits events");
        let message = topology.events.direct_get(sequence).await.unwrap();
        assert!(message.subject.ends_with(&id.to_string()), "sequence {sequence} holds {}", message.subject);
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header(headers::COMMAND_ID), Some(m.command_id.to_string()), "sequence {sequence}");
        batched += usize::from(header("Nats-Batch-Id").is_some());
    }
    assert!(batched > 1, "64 concurrent commands should share batches; {batched} were batched");
    let mut events = topology.events.clone();
    assert_eq!(events.info().await.unwrap().state.messages, 64);
}

#[tokio::test]
async fn a_batch_refused_for_one_stale_member_still_commits_every_command() {
    let server = NatsServer::start();
    let (a, topology) = commands_with(&server, CommitMode::Grouped).await;
    let (b, _) = commands_with(&server, CommitMode::Grouped).await;
    let ids: Vec<Uuid> = provision_concurrently(&a, 32).await.into_iter().map(|(id, ..)| id).collect();
    for id in &ids {
        b.load("acme", *id).await.unwrap();
    }
    // b's cache of the first instance goes stale: its message fails its batch's expectations.
    a.execute("acme", ids[0], upgrade("17"), None, meta(domain::OperationKind::Update)).await.unwrap();
    let results =
        join_all(
            ids.iter().map(|id| {
                let b = &b;
                async move {
                    b.execute("acme", *id, describe("b"), None, meta(domain::OperationKind::Update)).await
                }
            }),
        )
        .await;
    let (cold, _) = commands_with(&server, CommitMode::Grouped).await;
    for (id, result) in ids.iter().zip(results) {
        let committed = result.unwrap_or_else(|e| panic!("update of {id}: {e}"));
        let expected = if *id == ids[0] { 3 } else { 2 };
        assert_eq!(committed.version, expected, "{id}");
        let (stored, version) = cold.load("acme", *id).await.unwrap();
        assert_eq!((stored.spec().unwrap().description.as_str(), version), ("b", expected), "{id}");
    }
    let mut events = topology.events.clone();
    assert_eq!(events.info().await.unwrap().state.messages, 32 + 1 + 32);
    let stats = b.store().commit_stats().expect("a grouped store has a committer");
    assert!(
        stats.refused_batches.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the stale update was meant to be a batch member, refusing its batch; it was published alone"
    );
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_recognised_not_stored_twice() {
    // A short acknowledgement timeout, so that freezing the server for a moment loses the batch's answer.
    const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
    let server = NatsServer::start();
    let client = server.connect().await;
    let jetstream = async_nats::jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(client);
    let settings = Settings { commit_mode: CommitMode::Grouped, ..Settings::default() };
    let topology = settings.apply(&jetstream).await.expect("topology");
    let commands = InstanceCommands::new(&topology, 1000);
    let ids: Vec<Uuid> = provision_concurrently(&commands, 32).await.into_iter().map(|(id, ..)| id).collect();

    // Frozen, the server buffers the batch and answers nothing; the batch times out and its members are
    // re-sent alone. Thawed once the committer has given the batch up, the server stores the batch first,
    // so each re-send meets its own message.
    server.freeze();
    let updates = join_all(ids.iter().map(|id| {
        let commands = &commands;
        async move {
            let m = meta(domain::OperationKind::Update);
            (m.command_id, commands.execute("acme", *id, describe("while frozen"), None, m).await)
        }
    }));
    let stats = commands.store().commit_stats().expect("a grouped store has a committer");
    let thaw = async {
        // The committer's own count is the event: no notification exists, so poll it, bounded.
        let given_up = tokio::time::timeout(ACK_TIMEOUT * 5, async {
            while stats.unanswered_batches.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        server.thaw();
        assert!(given_up.is_ok(), "the frozen server's batch was never given up as unanswered");
    };
    let (results, ()) = tokio::join!(updates, thaw);

    let mut recognised = 0;
    for (id, (command_id, result)) in ids.iter().zip(results) {
        let committed = result.unwrap_or_else(|e| panic!("update of {id}: {e}"));
        assert_eq!(committed.version, 2, "{id}: applied once");
        let sequence = committed.stream_sequence.expect("the update's message");
        let message = topology.events.direct_get(sequence).await.unwrap();
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header(headers::COMMAND_ID), Some(command_id.to_string()), "{id}: its own message");
        recognised += usize::from(committed.duplicate && header("Nats-Batch-Id").is_some());
    }
    assert!(recognised > 0, "no batch member was re-sent and recognised by its command id");
    let mut events = topology.events.clone();
    assert_eq!(events.info().await.unwrap().state.messages, 32 + 32, "every update stored once");
}

/// A stream written before `ConfigurationChanged` gained `changed` (schema 2) still reads: the store
/// replays the old message through the upcaster, and readers see the current form.
#[tokio::test]
async fn a_stream_holding_schema_1_configuration_changes_still_reads() {
    let server = NatsServer::start();
    let (commands, topology) = commands(&server).await;
    let id = Uuid::now_v7();
    commands
        .execute("acme", id, provision(id, "db"), None, meta(domain::OperationKind::Provision))
        .await
        .unwrap();
    // As a build from before schema 2 wrote it, byte for byte in form: no `changed`, and no snapshot, so
    // loading must replay (and so upcast) rather than read a snapshot.
    let command_id = Uuid::now_v7();
    let old = serde_json::json!({
        "aggregate_type": "instance",
        "aggregate_id": format!("acme.{id}"),
        "first_version": 2,
        "events": [{"type": "ConfigurationChanged", "schema": "1",
                    "data": {"config": {"max_connections": 300, "wal_level": "logical"}}}],
        "metadata": {"command_id": command_id, "operation": "update", "actor": "tester",
                     "time": "2025-01-01T00:00:00Z"},
    });
    let client = server.connect().await;
    let jetstream = async_nats::jetstream::new(client);
    let mut message_headers = async_nats::HeaderMap::new();
    message_headers.insert(headers::EVENT_TYPE, "ConfigurationChanged");
    message_headers.insert(headers::SCHEMA_VERSION, "1");
    jetstream
        .publish_with_headers(
            format!("cp.evt.eu-1.acme.{id}"),
            message_headers,
            serde_json::to_vec(&old).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let fresh = InstanceCommands::new(&topology, 10);
    let (instance, version) = fresh.load("acme", id).await.unwrap();
    assert_eq!(version, 2);
    let config = &instance.spec().unwrap().config;
    assert_eq!(config.get("max_connections"), Some(&domain::ConfigValue::Int(300)));
    let history = fresh.store().history(&aggregate_id("acme", id)).await.unwrap();
    let (_, event, _) = history.last().unwrap();
    assert!(
        matches!(event, InstanceEvent::ConfigurationChanged { changed, .. } if changed == &["max_connections", "wal_level"]),
        "{event:?}"
    );
    // And the store writes on top of it in the current schema.
    let update = InstanceCommand::Update(UpdateInstance {
        config: Some([("wal_level".to_owned(), Some(domain::ConfigValue::Text("replica".into())))].into()),
        ..Default::default()
    });
    let committed =
        fresh.execute("acme", id, update, Some(2), meta(domain::OperationKind::Update)).await.unwrap();
    let message = topology.events.direct_get(committed.stream_sequence.unwrap()).await.unwrap();
    assert_eq!(message.headers.get(headers::SCHEMA_VERSION).map(|v| v.as_str()), Some("3"));
}

/// A schema newer than this build writes is refused, not read with its new fields dropped.
#[test]
fn an_event_in_a_newer_schema_is_refused() {
    let batch: EventBatch = serde_json::from_value(serde_json::json!({
        "aggregate_type": "Instance", "aggregate_id": "acme.x", "first_version": 2,
        "events": [{"type": "VersionUpgraded", "schema": "2", "data": {"from": "16", "to": "17", "via": "x"}}],
        "metadata": {"command_id": Uuid::nil(), "operation": "update", "actor": "a", "time": "2025-01-01T00:00:00Z"},
    }))
    .unwrap();
    let error = batch.decode_events::<Instance>().unwrap_err();
    assert!(matches!(error, streams::DecodeError::UnsupportedSchema { .. }), "{error}");
}

/// A message whose snapshot predates per-aspect generations (format 1) still reads where no replay is
/// possible (the agent's case): every aspect counts as changed at the message's version.
#[test]
fn a_snapshot_of_format_1_reads_with_every_aspect_changed_at_its_version() {
    let id = Uuid::nil();
    let batch: EventBatch = serde_json::from_value(serde_json::json!({
        "aggregate_type": "Instance", "aggregate_id": format!("acme.{id}"), "first_version": 5,
        "events": [{"type": "DescriptionChanged", "schema": "1", "data": {"description": "x"}}],
        "metadata": {"command_id": Uuid::nil(), "operation": "update", "actor": "a", "time": "2025-01-01T00:00:00Z"},
        "snapshot": {"version": 1, "state": {"lifecycle": "active", "spec": {
            "id": id, "project": "acme", "name": "db", "service": "postgresql", "version": "16", "plan": "starter",
            "resources": {"cpu_millis": 500, "memory_mib": 1024, "replicas": 1}, "storage_gib": 10,
            "config": {}, "description": "x", "deletion_protection": false, "cluster": "eu-1"}}},
    }))
    .unwrap();
    let instance: Instance = batch.aggregate::<Instance>().expect("a readable snapshot").unwrap();
    assert_eq!(instance.generations(), domain::instance::Generations::all(5));
    assert!(instance.spec().unwrap().acl.is_empty());
}

//! The audit chain against real nats-servers: a stream written by the store verifies; a copy of it with
//! one message edited, removed or reordered does not, and the walk names the instance and sequence.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use domain::{InstanceCommand, OperationKind, ProvisionInstance, ServiceType, UpdateInstance};
use futures::StreamExt as _;
use streams::{
    CommandMetadata, CommitMode, Settings, chain,
    chain::BreakReason,
    instances::{InstanceCommands, all_instances_filter, instance_event_filters},
};
use testkit::NatsServer;
use uuid::Uuid;

async fn topology(server: &NatsServer, mode: CommitMode) -> streams::Topology {
    let settings = Settings { commit_mode: mode, ..Settings::default() };
    settings.apply(&jetstream::new(server.connect().await)).await.expect("topology")
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

/// Two instances with three messages each, interleaved, written by two store processes (the second
/// continues chains the first began, loading their heads cold) in `mode`.
async fn history(server: &NatsServer, mode: CommitMode) -> (streams::Topology, [Uuid; 2]) {
    let topology = topology(server, mode).await;
    let first = InstanceCommands::new(&topology, 100);
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    for (n, id) in ids.iter().enumerate() {
        let meta = CommandMetadata::new(OperationKind::Provision, "alice");
        first.execute("acme", *id, provision(*id, &format!("db{n}")), None, meta).await.unwrap();
    }
    let second = InstanceCommands::new(&topology, 100);
    for round in 0..2 {
        for id in ids {
            let meta = CommandMetadata::new(OperationKind::Update, "bob");
            second.execute("acme", id, describe(&format!("round {round}")), None, meta).await.unwrap();
        }
    }
    (topology, ids)
}

/// Every message of the source's events stream, in order.
async fn messages(stream: &jetstream::stream::Stream) -> Vec<async_nats::Message> {
    let consumer = stream.create_consumer(OrderedConfig::default()).await.unwrap();
    let count = consumer.cached_info().num_pending as usize;
    consumer.messages().await.unwrap().take(count).map(|m| m.unwrap().message).collect().await
}

/// A second server holding a copy of `source`'s messages as `edit` leaves them.
async fn copy(
    source: &streams::Topology,
    edit: impl FnOnce(&mut Vec<async_nats::Message>),
) -> (NatsServer, streams::Topology) {
    let mut messages = messages(&source.events).await;
    edit(&mut messages);
    let server = NatsServer::start();
    let copy = topology(&server, CommitMode::OneByOne).await;
    for message in messages {
        // The store's own concurrency checks are stored with each message; a copy must not re-apply them.
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            if !AsRef::<str>::as_ref(name).starts_with("Nats-Expected") {
                headers.insert(name.clone(), values[0].clone());
            }
        }
        let ack = copy
            .jetstream
            .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
            .await
            .unwrap();
        ack.await.unwrap();
    }
    (server, copy)
}

async fn verify(topology: &streams::Topology) -> chain::Verified {
    chain::verify(&topology.events, vec![all_instances_filter()]).await.expect("walk")
}

#[tokio::test]
async fn a_stream_written_by_the_store_and_an_untouched_copy_verify() {
    for mode in [CommitMode::OneByOne, CommitMode::Grouped] {
        let server = NatsServer::start();
        let (source, ids) = history(&server, mode).await;
        let report = verify(&source).await;
        assert_eq!(
            (report.messages, report.subjects, report.unchained, report.broken),
            (6, 2, 0, None),
            "{mode:?}"
        );
        let (_copy_server, copy) = copy(&source, |_| {}).await;
        assert_eq!(verify(&copy).await.broken, None, "an untouched copy verifies ({mode:?})");
        let one = chain::verify(&source.events, instance_event_filters("acme", ids[0])).await.unwrap();
        assert_eq!((one.messages, one.subjects), (3, 1), "one instance's walk reads only its messages");
    }
}

#[tokio::test]
async fn an_edited_message_breaks_the_chain_at_itself() {
    let server = NatsServer::start();
    let (source, ids) = history(&server, CommitMode::OneByOne).await;
    // Message 3 is the first update of the first instance; the edit changes who did it.
    let (_copy_server, copy) = copy(&source, |messages| {
        let edited =
            String::from_utf8(messages[2].payload.to_vec()).unwrap().replace("\"bob\"", "\"mallory\"");
        assert!(edited.contains("mallory"), "the payload names its actor");
        messages[2].payload = edited.into();
    })
    .await;
    let broken = verify(&copy).await.broken.expect("an edited message is found");
    assert_eq!(
        (broken.instance(), broken.sequence, broken.reason),
        (Some(("acme", ids[0])), 3, BreakReason::Mismatch)
    );
}

#[tokio::test]
async fn a_removed_message_breaks_the_chain_at_its_successor() {
    let server = NatsServer::start();
    let (source, ids) = history(&server, CommitMode::OneByOne).await;
    // Sequence 4 is the second instance's first update; without it, its second update (now sequence 5
    // of the copy) no longer follows.
    let (_copy_server, copy) = copy(&source, |messages| {
        messages.remove(3);
    })
    .await;
    let broken = verify(&copy).await.broken.expect("a removed message is found");
    assert_eq!((broken.instance(), broken.sequence), (Some(("acme", ids[1])), 5));
    assert!(broken.to_string().contains(&format!("acme/{} breaks at sequence 5", ids[1])), "{broken}");
}

#[tokio::test]
async fn reordered_messages_break_the_chain() {
    let server = NatsServer::start();
    let (source, ids) = history(&server, CommitMode::OneByOne).await;
    // Swap the first instance's two updates (sequences 3 and 5).
    let (_copy_server, copy) = copy(&source, |messages| messages.swap(2, 4)).await;
    let broken = verify(&copy).await.broken.expect("reordered messages are found");
    assert_eq!((broken.instance(), broken.sequence), (Some(("acme", ids[0])), 3));
}

#[tokio::test]
async fn a_message_stripped_of_its_chain_value_is_found() {
    let server = NatsServer::start();
    let (source, ids) = history(&server, CommitMode::OneByOne).await;
    let (_copy_server, copy) = copy(&source, |messages| {
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in messages[5].headers.as_ref().unwrap().iter() {
            if AsRef::<str>::as_ref(name) != streams::headers::CHAIN {
                headers.insert(name.clone(), values[0].clone());
            }
        }
        messages[5].headers = Some(headers);
    })
    .await;
    let broken = verify(&copy).await.broken.expect("a stripped message is found");
    assert_eq!(
        (broken.instance(), broken.sequence, broken.reason),
        (Some(("acme", ids[1])), 6, BreakReason::Missing)
    );
}

#[tokio::test]
async fn a_subject_whose_first_message_has_no_chain_value_is_found() {
    let server = NatsServer::start();
    let (source, _) = history(&server, CommitMode::OneByOne).await;
    // Written beside the store (by anything holding the account's rights): a subject of its own, so no
    // earlier chained message betrays it; only the missing value does.
    let forged = streams::instances::instance_subject("eu-2", "acme", uuid::Uuid::now_v7());
    source.jetstream.publish(forged.clone(), "{}".into()).await.unwrap().await.unwrap();
    let report = verify(&source).await;
    let broken = report.broken.expect("an unchained subject is found");
    assert_eq!((broken.subject, broken.sequence, broken.reason), (forged, 7, BreakReason::Missing));
    assert_eq!(report.unchained, 1);
}

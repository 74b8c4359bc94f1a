//! Poison messages in the event stream, of each kind the projector meets (not JSON, an event type it does
//! not know, a schema newer than it reads, an observation that is not one): each is counted, parked in the
//! dead-letter stream naming the message and the reason, and skipped, and the messages after it are
//! applied.

use std::time::Duration;

use domain::{InstanceCommand, ProvisionInstance, ServiceType};
use projections::{Projector, ProjectorMetrics, ReadModels};
use streams::{
    CommandMetadata, Settings,
    dead_letters::{self, Reader},
    instances::InstanceCommands,
    read_models::ReadModelBucket,
};
use testkit::NatsServer;
use uuid::Uuid;

async fn provision(commands: &InstanceCommands, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    let command = InstanceCommand::Provision(ProvisionInstance::new(
        id,
        "acme",
        name,
        ServiceType::Grafana,
        "11.6",
        "starter",
        "c1",
    ));
    let metadata = CommandMetadata::new(domain::OperationKind::Provision, "test");
    commands.execute("acme", id, command, None, metadata).await.expect("provision");
    id
}

#[tokio::test]
async fn poison_messages_are_counted_parked_and_skipped_by_the_projector() {
    let server = NatsServer::start();
    let topology =
        Settings::default().apply(&async_nats::jetstream::new(server.connect().await)).await.unwrap();
    let commands = InstanceCommands::new(&topology, 100);
    let before = provision(&commands, "before").await;
    let good =
        topology.events.get_last_raw_message_by_subject(&format!("cp.evt.c1.acme.{before}")).await.unwrap();
    let good: serde_json::Value = serde_json::from_slice(&good.payload).unwrap();
    let mut unknown_type = good.clone();
    unknown_type["events"][0]["type"] = "InstanceTeleported".into();
    let mut newer_schema = good.clone();
    newer_schema["events"][0]["schema"] = "99".into();
    let poison = [
        (format!("cp.evt.c1.acme.{}", Uuid::now_v7()), b"not an event batch".to_vec()),
        (format!("cp.evt.c1.acme.{}", Uuid::now_v7()), serde_json::to_vec(&unknown_type).unwrap()),
        (format!("cp.evt.c1.acme.{}", Uuid::now_v7()), serde_json::to_vec(&newer_schema).unwrap()),
        (format!("cp.obs.c1.acme.{}", Uuid::now_v7()), b"{\"not\": \"an observation\"}".to_vec()),
    ];
    for (subject, payload) in &poison {
        topology
            .jetstream
            .publish(subject.clone(), payload.clone().into())
            .await
            .unwrap()
            .await
            .expect("stored");
    }
    let after = provision(&commands, "after").await;

    let metrics = ProjectorMetrics::default();
    let bucket = ReadModelBucket::new(&topology);
    Projector::new(topology.events.clone(), bucket.clone(), metrics.clone())
        .parking_skipped(topology.jetstream.clone())
        .spawn();
    let models = ReadModels::start(bucket, Duration::from_secs(10)).await.unwrap();
    let last = topology.events.clone().info().await.unwrap().state.last_sequence;
    assert!(models.wait_for(last, Duration::from_secs(30)).await, "the projector got past the poison");
    let both = {
        let model = models.read();
        model.instance("acme", before).is_some() && model.instance("acme", after).is_some()
    };
    assert!(both, "the messages before and after the poison are applied");
    assert_eq!(metrics.skipped.get(), 4, "each counted once");

    let parked = dead_letters::list(&topology.jetstream, 0, 100).await.unwrap();
    let mine: Vec<_> = parked.iter().map(|(_, l)| l).filter(|l| l.reader == Reader::Projector).collect();
    let subjects: std::collections::BTreeSet<_> = mine.iter().map(|l| l.subject.clone()).collect();
    assert_eq!(subjects, poison.iter().map(|(s, _)| s.clone()).collect(), "each parked: {mine:?}");
    assert!(
        mine.iter().all(|l| l.stream == "CP_EVENTS" && l.sequence > 0 && !l.reason.is_empty()),
        "{mine:?}"
    );
}

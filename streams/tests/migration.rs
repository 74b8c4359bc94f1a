//! An instance moving to another cluster, against a real nats-server: each message lands on the subject
//! of the cluster that must act on it, a stale writer on another subject is refused (the expected
//! sequence is the aggregate's over every cluster), and the audit chain follows the instance across.

use async_nats::jetstream;
use domain::{
    InstanceCommand, InstanceError, OperationKind, ProvisionInstance, ServiceType,
    instance::restore::RestoreSource,
};
use streams::{
    CommandMetadata, ExecuteError, Settings, chain,
    instances::{InstanceCommands, instance_event_filters, instance_subject},
};
use testkit::NatsServer;
use uuid::Uuid;

fn meta() -> CommandMetadata {
    CommandMetadata::new(OperationKind::Migrate, "platform-admin")
}

async fn last_subject(topology: &streams::Topology, project: &str, id: Uuid) -> String {
    let pattern = format!("cp.evt.*.{project}.{id}");
    topology.events.get_last_raw_message_by_subject(&pattern).await.expect("a message").subject.to_string()
}

#[tokio::test]
async fn a_moving_instance_writes_where_each_cluster_must_act_and_refuses_a_stale_writer() {
    let server = NatsServer::start();
    let topology =
        Settings::default().apply(&jetstream::new(server.connect().await)).await.expect("topology");
    let (writer, stale) = (InstanceCommands::new(&topology, 100), InstanceCommands::new(&topology, 100));
    let (id, migration, backup) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let provision =
        ProvisionInstance::new(id, "acme", "orders", ServiceType::Mongodb, "7.0", "starter", "eu-1");
    writer.execute("acme", id, InstanceCommand::Provision(provision), None, meta()).await.unwrap();
    let start =
        InstanceCommand::StartMigration { migration_id: migration, to: "eu-2".into(), backup_id: backup };
    writer.execute("acme", id, start, None, meta()).await.unwrap();
    assert_eq!(last_subject(&topology, "acme", id).await, instance_subject("eu-1", "acme", id));

    let source = RestoreSource {
        backup_id: backup,
        instance_id: id,
        service: ServiceType::Mongodb,
        version: "7.0".into(),
        location: Some(format!("acme/{id}/{backup}.archive.gz")),
        unusable: None,
        point_in_time: None,
    };
    let place = InstanceCommand::PlaceMigrationTarget { migration_id: migration, source };
    writer.execute("acme", id, place, None, meta()).await.unwrap();
    assert_eq!(
        last_subject(&topology, "acme", id).await,
        instance_subject("eu-2", "acme", id),
        "the copy is placed where the target's agent reads"
    );
    // The stale writer learns the instance as it is now (the copy placed, on eu-2's subject)...
    let (seen, _) = stale.load("acme", id).await.unwrap();
    assert!(seen.migration().is_some_and(|m| m.target.is_some()));

    // ...then the move completes, on eu-1's subject, which the stale writer does not look at.
    writer
        .execute("acme", id, InstanceCommand::CompleteMigration { migration_id: migration }, None, meta())
        .await
        .unwrap();
    assert_eq!(
        last_subject(&topology, "acme", id).await,
        instance_subject("eu-1", "acme", id),
        "the completion is published where the source's agent reads, which removes its objects"
    );

    // Its failure would go to eu-2's subject, whose last message it knows: only the aggregate-wide
    // expected sequence notices the completion since, so it reloads and finds no move to fail.
    let fail = InstanceCommand::FailMigration { migration_id: migration, reason: "stale".into() };
    let refused = stale.execute("acme", id, fail, None, meta()).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(InstanceError::NoSuchMigration { .. }))),
        "a stale writer's step landed after the move completed: {refused:?}"
    );
    let (now, version) = writer.load("acme", id).await.unwrap();
    assert_eq!((now.spec().unwrap().cluster.as_str(), now.migration(), version), ("eu-2", None, 4));

    // The next change lives on eu-2, and the chain follows the instance across both clusters' subjects.
    writer.execute("acme", id, InstanceCommand::RotateCredentials, None, meta()).await.unwrap();
    assert_eq!(last_subject(&topology, "acme", id).await, instance_subject("eu-2", "acme", id));
    let report = chain::verify(&topology.events, instance_event_filters("acme", id)).await.unwrap();
    assert_eq!((report.messages, &report.broken), (5, &None), "{report:?}");
}

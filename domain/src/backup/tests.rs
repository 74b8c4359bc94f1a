//! Given / when / then: the Backup aggregate.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;

type BackupTest = TestFramework<Backup>;

fn source() -> BackupSource {
    BackupSource {
        project: "acme".into(),
        instance_id: Uuid::nil(),
        instance_name: "orders".into(),
        cluster: "eu-1".into(),
        service: ServiceType::Postgresql,
        version: "16".into(),
    }
}

fn request(lifecycle: Lifecycle, ever_ready: bool) -> BackupCommand {
    BackupCommand::Request {
        source: source(),
        trigger: BackupTrigger::Manual,
        instance: InstanceFacts { lifecycle, ever_ready },
    }
}

fn requested() -> BackupEvent {
    BackupEvent::BackupRequested { source: source(), trigger: BackupTrigger::Manual }
}

#[test]
fn a_backup_of_a_ready_instance_is_requested() {
    BackupTest::with(())
        .given_no_previous_events()
        .when(request(Lifecycle::Active, true))
        .then_expect_events(vec![requested()]);
}

#[test]
fn no_backup_before_the_instance_was_first_ready() {
    BackupTest::with(())
        .given_no_previous_events()
        .when(request(Lifecycle::Active, false))
        .then_expect_error(BackupError::InstanceNotReady);
}

#[test]
fn no_backup_once_deprovisioning_began_or_of_an_unknown_instance() {
    BackupTest::with(())
        .given_no_previous_events()
        .when(request(Lifecycle::Deprovisioning, true))
        .then_expect_error(BackupError::InstanceDeprovisioning);
    BackupTest::with(())
        .given_no_previous_events()
        .when(request(Lifecycle::Absent, false))
        .then_expect_error(BackupError::InstanceNotFound);
}

#[test]
fn a_repeated_request_changes_nothing_and_another_under_the_same_id_is_refused() {
    BackupTest::with(())
        .given(vec![requested()])
        .when(request(Lifecycle::Active, true))
        .then_expect_events(vec![]);
    let mut other = source();
    other.version = "17".into();
    BackupTest::with(())
        .given(vec![requested()])
        .when(BackupCommand::Request {
            source: other,
            trigger: BackupTrigger::Manual,
            instance: InstanceFacts { lifecycle: Lifecycle::Active, ever_ready: true },
        })
        .then_expect_error(BackupError::AlreadyExists);
}

#[test]
fn a_backup_outlives_its_instance_and_is_deleted_once() {
    // The instance's state does not matter for a deletion: backups outlive their instance.
    BackupTest::with(())
        .given(vec![requested()])
        .when(BackupCommand::Delete { ended: true })
        .then_expect_events(vec![BackupEvent::BackupDeletionRequested {}]);
    BackupTest::with(())
        .given(vec![requested(), BackupEvent::BackupDeletionRequested {}])
        .when(BackupCommand::Delete { ended: true })
        .then_expect_events(vec![]);
    BackupTest::with(())
        .given_no_previous_events()
        .when(BackupCommand::Delete { ended: true })
        .then_expect_error(BackupError::NotFound);
}

#[test]
fn a_backup_still_being_made_cannot_be_deleted() {
    // Its artifact may still be uploading: deleting now would leave it in the store with no record.
    BackupTest::with(())
        .given(vec![requested()])
        .when(BackupCommand::Delete { ended: false })
        .then_expect_error(BackupError::StillRunning);
}

/// Names, schema and wire form as literals: a rename fails here, not in a reader of old streams.
#[test]
fn every_event_s_name_schema_and_wire_form_are_frozen() {
    let id = Uuid::nil();
    let cases = [
        (
            BackupEvent::BackupRequested {
                source: source(),
                trigger: BackupTrigger::Schedule { schedule_id: id },
            },
            serde_json::json!({"type": "BackupRequested", "data": {
                "source": {"project": "acme", "instance_id": id, "instance_name": "orders", "cluster": "eu-1",
                           "service": "postgresql", "version": "16"},
                "trigger": {"kind": "schedule", "schedule_id": id}}}),
        ),
        (
            BackupEvent::BackupDeletionRequested {},
            serde_json::json!({"type": "BackupDeletionRequested", "data": {}}),
        ),
    ];
    for (event, wire) in cases {
        assert_eq!(cqrs_es::DomainEvent::event_version(&event), "1");
        assert_eq!(cqrs_es::DomainEvent::event_type(&event), wire["type"].as_str().unwrap());
        assert_eq!(serde_json::to_value(&event).unwrap(), wire);
        assert_eq!(serde_json::from_value::<BackupEvent>(wire).unwrap(), event);
    }
}

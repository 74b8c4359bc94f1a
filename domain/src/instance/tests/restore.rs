//! Given / when / then: restoring from a backup, in place and into a new instance.

use super::*;
use crate::instance::restore::{RestoreSource, RestoreSpec};

fn source(version: &str) -> RestoreSource {
    RestoreSource {
        backup_id: Uuid::nil(),
        instance_id: Uuid::max(),
        service: ServiceType::Postgresql,
        version: version.into(),
        location: Some("acme/x/y".into()),
        unusable: None,
    }
}

fn restored() -> InstanceEvent {
    InstanceEvent::RestoreRequested {
        restore: RestoreSpec {
            backup_id: Uuid::nil(),
            source_instance_id: Uuid::max(),
            location: "acme/x/y".into(),
        },
    }
}

#[test]
fn a_completed_backup_of_the_same_service_and_version_is_restored_in_place() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(source("16")))
        .then_expect_events(vec![restored()]);
    // An older version's backup loads into a newer server.
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(source("15")))
        .then_expect_events(vec![restored()]);
}

#[test]
fn a_failed_deleted_or_unfinished_backup_cannot_be_restored_from() {
    let mut failed = source("16");
    failed.unusable = Some("it failed: disk full".into());
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(failed))
        .then_expect_error(InstanceError::BackupNotRestorable {
            backup_id: Uuid::nil(),
            reason: "it failed: disk full".into(),
        });
    let mut running = source("16");
    running.location = None;
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(running))
        .then_expect_error(InstanceError::BackupNotRestorable {
            backup_id: Uuid::nil(),
            reason: "it has not completed".into(),
        });
}

#[test]
fn only_a_backup_of_the_same_service_and_not_a_newer_version_is_restored() {
    let mut mongo = source("7.0");
    mongo.service = ServiceType::Mongodb;
    let refused = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(mongo))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/backup_id".to_owned(), "same_service"));
    let refused = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(source("17")))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/backup_id".to_owned(), "restore_version"));
}

#[test]
fn a_new_instance_restored_from_a_backup_records_its_source() {
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.restore = Some(source("16"));
    let events = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd.clone()))
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], restored(), "after the provisioning, in the same command");
    // A retry of the same provision changes nothing.
    InstanceTest::with(services())
        .given(events)
        .when(InstanceCommand::Provision(cmd))
        .then_expect_events(vec![]);
}

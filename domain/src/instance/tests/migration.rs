//! Given / when / then: moving an instance to another cluster, and what each cluster's agent runs.

use super::*;
use crate::instance::{
    migration::{Migration, MigrationTarget},
    restore::{RestoreSource, RestoreSpec},
};

fn move_id() -> Uuid {
    Uuid::from_u128(0xabcd_ef01_0000_7000_8000_0000_0000_0002)
}

fn backup_id() -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00bb)
}

fn started() -> InstanceEvent {
    InstanceEvent::MigrationStarted {
        migration_id: move_id(),
        from: "eu-1".into(),
        to: "eu-2".into(),
        backup_id: backup_id(),
    }
}

fn own_backup(service: ServiceType, version: &str) -> RestoreSource {
    RestoreSource {
        backup_id: backup_id(),
        instance_id: id(),
        service,
        version: version.into(),
        location: Some("acme/orders/backup".into()),
        unusable: None,
        point_in_time: None,
    }
}

fn restore_spec() -> RestoreSpec {
    RestoreSpec {
        backup_id: backup_id(),
        source_instance_id: id(),
        location: "acme/orders/backup".into(),
        target_time: None,
    }
}

fn placed(archive_server: Option<&str>) -> InstanceEvent {
    InstanceEvent::MigrationTargetPlaced {
        migration_id: move_id(),
        restore: restore_spec(),
        archive_server: archive_server.map(str::to_owned),
    }
}

fn completed() -> InstanceEvent {
    InstanceEvent::MigrationCompleted { migration_id: move_id(), from: "eu-1".into(), to: "eu-2".into() }
}

fn fold(events: Vec<InstanceEvent>) -> Instance {
    let mut instance = Instance::default();
    for event in events {
        instance.apply(event);
    }
    instance
}

#[test]
fn a_move_starts_to_another_cluster_and_is_recorded_with_both_clusters() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::StartMigration {
            migration_id: move_id(),
            to: "eu-2".into(),
            backup_id: backup_id(),
        })
        .then_expect_events(vec![started()]);
    // A retried start of the same move changes nothing.
    InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::StartMigration {
            migration_id: move_id(),
            to: "eu-2".into(),
            backup_id: backup_id(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_move_to_where_it_runs_is_refused() {
    let refused = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::StartMigration {
            migration_id: move_id(),
            to: "eu-1".into(),
            backup_id: backup_id(),
        })
        .inspect_result();
    assert_eq!(rule_of(refused), ("/cluster".to_owned(), "other_cluster"));
}

#[test]
fn while_it_moves_every_other_change_waits() {
    for command in [
        update(|u| u.description = Some("x".into())),
        InstanceCommand::Deprovision,
        InstanceCommand::RotateCredentials,
        InstanceCommand::StartMigration {
            migration_id: Uuid::nil(),
            to: "eu-3".into(),
            backup_id: backup_id(),
        },
    ] {
        let refused =
            InstanceTest::with(services()).given(vec![pg16(), started()]).when(command).inspect_result();
        assert_eq!(refused, Err(InstanceError::Migrating { to: "eu-2".into() }));
    }
}

#[test]
fn the_copy_is_placed_from_the_move_s_own_backup_only() {
    InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::PlaceMigrationTarget {
            migration_id: move_id(),
            source: own_backup(ServiceType::Postgresql, "16"),
        })
        .then_expect_events(vec![placed(Some("orders-db-mabcdef01"))]);
    // Another backup, even of the same instance, is not the one the move was started for.
    let other = RestoreSource { backup_id: Uuid::nil(), ..own_backup(ServiceType::Postgresql, "16") };
    let refused = InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::PlaceMigrationTarget { migration_id: move_id(), source: other })
        .inspect_result();
    assert!(matches!(refused, Err(InstanceError::BackupNotRestorable { .. })), "{refused:?}");
    // A failed backup cannot be restored from.
    let failed =
        RestoreSource { unusable: Some("it failed".into()), ..own_backup(ServiceType::Postgresql, "16") };
    let refused = InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::PlaceMigrationTarget { migration_id: move_id(), source: failed })
        .inspect_result();
    assert!(matches!(refused, Err(InstanceError::BackupNotRestorable { .. })), "{refused:?}");
    // Steps of another move are refused.
    let refused = InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::CompleteMigration { migration_id: Uuid::nil() })
        .inspect_result();
    assert_eq!(refused, Err(InstanceError::NoSuchMigration { id: Uuid::nil() }));
}

#[test]
fn a_move_completes_only_once_the_copy_was_placed() {
    let refused = InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(InstanceCommand::CompleteMigration { migration_id: move_id() })
        .inspect_result();
    assert_eq!(rule_of(refused), ("/migration".to_owned(), "target_placed"));
    InstanceTest::with(services())
        .given(vec![pg16(), started(), placed(None)])
        .when(InstanceCommand::CompleteMigration { migration_id: move_id() })
        .then_expect_events(vec![completed()]);
}

#[test]
fn a_failed_move_says_whether_a_copy_was_placed() {
    let failed = |placed| InstanceEvent::MigrationFailed {
        migration_id: move_id(),
        from: "eu-1".into(),
        to: "eu-2".into(),
        reason: "backup failed".into(),
        target_placed: placed,
    };
    let command =
        || InstanceCommand::FailMigration { migration_id: move_id(), reason: "backup failed".into() };
    InstanceTest::with(services())
        .given(vec![pg16(), started()])
        .when(command())
        .then_expect_events(vec![failed(false)]);
    InstanceTest::with(services())
        .given(vec![pg16(), started(), placed(None)])
        .when(command())
        .then_expect_events(vec![failed(true)]);
    // Afterwards the instance takes changes again, where it was.
    let instance = fold(vec![pg16(), started(), placed(None), failed(true)]);
    assert_eq!(instance.migration(), None);
    assert_eq!(instance.spec().unwrap().cluster, "eu-1");
}

#[test]
fn each_message_goes_to_the_cluster_that_must_act_on_it_and_each_agent_runs_its_part() {
    let mongo = || provisioned(ServiceType::Mongodb, "7.0");
    let mut history = vec![mongo(), started()];
    let instance = fold(history.clone());
    // Started: nothing changes anywhere; it goes where the instance runs, which keeps serving it.
    assert_eq!(instance.message_cluster(&[started()]), Some("eu-1"));
    assert!(matches!(instance.on_cluster("eu-1"), Some(std::borrow::Cow::Borrowed(_))));
    assert!(instance.on_cluster("eu-2").is_none(), "nothing placed on the target before the backup");

    // Placed: the target's agent must see it, and runs a copy restored from the move's backup at the
    // placing version; the source still serves.
    history.push(placed(None));
    let instance = fold(history.clone());
    assert_eq!(instance.message_cluster(&[placed(None)]), Some("eu-2"));
    let copy = instance.on_cluster("eu-2").expect("the target runs the copy");
    assert_eq!(copy.spec().unwrap().cluster, "eu-2");
    assert_eq!(copy.spec().unwrap().restore, Some(restore_spec()));
    assert_eq!(copy.generations().restore, 3);
    assert_eq!(instance.on_cluster("eu-1").unwrap().spec().unwrap().restore, None);
    assert!(instance.on_cluster("eu-3").is_none());

    // Completed: the source's agent must see it, and runs nothing of it; the target runs what it ran.
    history.push(completed());
    let instance = fold(history);
    assert_eq!(instance.message_cluster(&[completed()]), Some("eu-1"));
    assert!(instance.on_cluster("eu-1").is_none(), "the source removes its objects");
    let serving = instance.on_cluster("eu-2").unwrap();
    assert_eq!(serving.spec().unwrap().restore, copy.spec().unwrap().restore);
    assert_eq!(serving.generations(), copy.generations());
    assert_eq!(instance.migration(), None);
    // The next change goes where it lives now.
    assert_eq!(instance.message_cluster(&[InstanceEvent::CredentialsRotationRequested {}]), Some("eu-2"));
}

#[test]
fn a_postgresql_copy_archives_under_a_server_name_of_its_own() {
    let instance = fold(vec![pg16(), started(), placed(Some("orders-db-mabcdef01"))]);
    let copy = instance.on_cluster("eu-2").unwrap();
    assert_eq!(copy.spec().unwrap().archive_server.as_deref(), Some("orders-db-mabcdef01"));
    assert_eq!(instance.spec().unwrap().archive_server, None, "the source keeps its archive");
    assert_eq!(
        instance.migration(),
        Some(&Migration {
            id: move_id(),
            from: "eu-1".into(),
            to: "eu-2".into(),
            backup_id: backup_id(),
            target: Some(MigrationTarget {
                restore: restore_spec(),
                archive_server: Some("orders-db-mabcdef01".into()),
                generation: 3,
            }),
        })
    );
}

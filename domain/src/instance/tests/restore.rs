//! Given / when / then: restoring from a backup, in place and into a new instance.

use super::*;
use crate::instance::restore::{POINT_IN_TIME_FIELD, PointInTime, RestoreSource, RestoreSpec};

fn source(version: &str) -> RestoreSource {
    RestoreSource {
        backup_id: Uuid::nil(),
        instance_id: Uuid::max(),
        service: ServiceType::Mongodb,
        version: version.into(),
        location: Some("acme/x/y".into()),
        unusable: None,
        point_in_time: None,
    }
}

fn pg_source() -> RestoreSource {
    RestoreSource { service: ServiceType::Postgresql, version: "16".into(), ..source("16") }
}

fn restored() -> InstanceEvent {
    InstanceEvent::RestoreRequested {
        restore: RestoreSpec {
            backup_id: Uuid::nil(),
            source_instance_id: Uuid::max(),
            location: "acme/x/y".into(),
            target_time: None,
        },
    }
}

fn mongo7() -> InstanceEvent {
    provisioned(ServiceType::Mongodb, "7.0")
}

fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[test]
fn a_completed_backup_of_the_same_service_and_version_is_restored_in_place() {
    InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(source("7.0")))
        .then_expect_events(vec![restored()]);
    // An older version's backup loads into a newer server.
    InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(source("6.0")))
        .then_expect_events(vec![restored()]);
}

#[test]
fn postgresql_is_restored_into_a_new_instance_only() {
    let refused = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Restore(pg_source()))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/backup_id".to_owned(), "restore_in_place"));
}

#[test]
fn a_fork_recovers_to_a_point_within_the_source_s_window_and_records_it() {
    let window = Some((at("2026-12-01T01:00:00Z"), at("2026-12-01T05:00:00Z")));
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.restore = Some(RestoreSource {
        point_in_time: Some(PointInTime { at: at("2026-12-01T02:30:00Z"), window }),
        ..pg_source()
    });
    let events = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd.clone()))
        .inspect_result()
        .unwrap();
    assert_eq!(
        events[1],
        InstanceEvent::RestoreRequested {
            restore: RestoreSpec {
                backup_id: Uuid::nil(),
                source_instance_id: Uuid::max(),
                location: "acme/x/y".into(),
                target_time: Some(at("2026-12-01T02:30:00Z")),
            },
        }
    );
    // Before the first backup's end, after the present, or with no backup at all: 422 stating the window.
    for (target, window) in [
        (at("2026-12-01T00:59:59Z"), window),
        (at("2026-12-01T05:00:01Z"), window),
        (at("2026-12-01T02:30:00Z"), None),
    ] {
        cmd.restore =
            Some(RestoreSource { point_in_time: Some(PointInTime { at: target, window }), ..pg_source() });
        let refused = InstanceTest::with(services())
            .given_no_previous_events()
            .when(InstanceCommand::Provision(cmd.clone()))
            .inspect_result();
        let Err(InstanceError::Invalid { field, rule, message }) = refused else { panic!("{refused:?}") };
        assert_eq!((field.as_str(), rule), (POINT_IN_TIME_FIELD, "recovery_window"));
        if window.is_some() {
            assert!(
                message.contains("from 2026-12-01T01:00:00Z to 2026-12-01T05:00:00Z"),
                "the window is stated: {message}"
            );
        }
    }
    // Only PostgreSQL recovers to a point in time.
    let mut mongo = provision(ServiceType::Mongodb, "7.0");
    mongo.config = Default::default();
    mongo.restore = Some(RestoreSource {
        point_in_time: Some(PointInTime { at: at("2026-12-01T02:30:00Z"), window }),
        ..source("7.0")
    });
    let refused = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(mongo))
        .inspect_result();
    assert_eq!(rule_of(refused), (POINT_IN_TIME_FIELD.to_owned(), "point_in_time_postgresql"));
}

#[test]
fn a_failed_deleted_or_unfinished_backup_cannot_be_restored_from() {
    let mut failed = source("16");
    failed.unusable = Some("it failed: disk full".into());
    InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(failed))
        .then_expect_error(InstanceError::BackupNotRestorable {
            backup_id: Uuid::nil(),
            reason: "it failed: disk full".into(),
        });
    let mut running = source("16");
    running.location = None;
    InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(running))
        .then_expect_error(InstanceError::BackupNotRestorable {
            backup_id: Uuid::nil(),
            reason: "it has not completed".into(),
        });
}

#[test]
fn only_a_backup_of_the_same_service_and_not_a_newer_version_is_restored() {
    let mut grafana = source("7.0");
    grafana.service = ServiceType::Grafana;
    let refused = InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(grafana))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/backup_id".to_owned(), "same_service"));
    let refused = InstanceTest::with(services())
        .given(vec![mongo7()])
        .when(InstanceCommand::Restore(source("8.0")))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/backup_id".to_owned(), "restore_version"));
}

#[test]
fn a_new_instance_restored_from_a_backup_records_its_source() {
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.restore = Some(pg_source());
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

#[test]
fn a_postgresql_backup_or_fork_is_restored_into_its_own_major_only() {
    // 16 into 17: a physical backup does not start on another major (a dump of MongoDB would load).
    let mut cmd = provision(ServiceType::Postgresql, "17");
    cmd.restore = Some(pg_source());
    let refused = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd.clone()))
        .inspect_result();
    let Err(InstanceError::Invalid { field, rule, message }) = refused else { panic!("{refused:?}") };
    assert_eq!((field.as_str(), rule), ("/version", "restore_major"));
    assert!(message.contains("PostgreSQL 16") && message.contains("make the new instance 16"), "{message}");
    // A fork likewise.
    let window = Some((at("2026-12-01T01:00:00Z"), at("2026-12-01T05:00:00Z")));
    cmd.restore = Some(RestoreSource {
        point_in_time: Some(PointInTime { at: at("2026-12-01T02:30:00Z"), window }),
        ..pg_source()
    });
    let refused = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .inspect_result();
    assert_eq!(rule_of(refused), ("/version".to_owned(), "restore_major"));
}

#[test]
fn a_postgresql_major_upgrade_names_a_new_archive_server_and_a_minor_one_or_another_service_does_not() {
    let fold = |service: ServiceType, from: &str, to: &str| {
        let mut instance = Instance::default();
        instance.apply(provisioned(service, from));
        instance.apply(InstanceEvent::VersionUpgraded { from: from.into(), to: to.into() });
        instance.spec().expect("provisioned").archive_server.clone()
    };
    assert_eq!(fold(ServiceType::Postgresql, "16", "17").as_deref(), Some("orders-db-pg17"));
    assert_eq!(fold(ServiceType::Postgresql, "16", "16.4"), None);
    assert_eq!(fold(ServiceType::Mongodb, "6.0", "7.0"), None);
}

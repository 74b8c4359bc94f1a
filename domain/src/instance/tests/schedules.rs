//! Given / when / then: backup schedules.

use super::*;
use crate::instance::schedules::{BackupSchedule, MAX_SCHEDULES, Retention};

fn schedule(name: &str) -> BackupSchedule {
    BackupSchedule {
        id: Uuid::now_v7(),
        name: name.into(),
        cron: "30 2 * * *".into(),
        time_zone: "Europe/Berlin".into(),
        enabled: true,
        retention: Retention { keep_last: Some(7), max_age_days: None },
    }
}

fn rules(result: Result<Vec<InstanceEvent>, InstanceError>) -> Vec<(String, &'static str)> {
    match result {
        Err(InstanceError::Invalid { field, rule, .. }) => vec![(field, rule)],
        Err(InstanceError::InvalidFields(all)) => all.into_iter().map(|v| (v.field, v.rule)).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_schedule_is_added_and_the_event_carries_every_schedule() {
    let nightly = schedule("nightly");
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::PutBackupSchedule(nightly.clone()))
        .then_expect_events(vec![InstanceEvent::BackupSchedulesChanged { schedules: vec![nightly] }]);
}

#[test]
fn every_bad_field_is_named_at_once() {
    let mut bad = schedule("Nightly!");
    bad.cron = "0 30 2 * * *".into();
    bad.time_zone = "Mars/Olympus".into();
    bad.retention = Retention { keep_last: None, max_age_days: None };
    let refused = rules(
        InstanceTest::with(services())
            .given(vec![pg16()])
            .when(InstanceCommand::PutBackupSchedule(bad))
            .inspect_result(),
    );
    assert_eq!(
        refused,
        [
            ("/name".to_owned(), "dns1123_label"),
            ("/cron".to_owned(), "cron_five_fields"),
            ("/time_zone".to_owned(), "iana_time_zone"),
            ("/retention".to_owned(), "retention_bound"),
        ]
    );
    let mut garbage = schedule("x");
    garbage.cron = "61 * * * *".into();
    let refused = rules(
        InstanceTest::with(services())
            .given(vec![pg16()])
            .when(InstanceCommand::PutBackupSchedule(garbage))
            .inspect_result(),
    );
    assert_eq!(refused, [("/cron".to_owned(), "cron")]);
}

#[test]
fn names_are_unique_per_instance_and_the_number_of_schedules_is_bounded() {
    let nightly = schedule("nightly");
    let given = vec![pg16(), InstanceEvent::BackupSchedulesChanged { schedules: vec![nightly.clone()] }];
    let refused = rules(
        InstanceTest::with(services())
            .given(given.clone())
            .when(InstanceCommand::PutBackupSchedule(schedule("nightly")))
            .inspect_result(),
    );
    assert_eq!(refused, [("/name".to_owned(), "unique_schedule_name")]);
    // The same schedule (same id) may keep its name.
    let mut renamed = nightly.clone();
    renamed.cron = "0 3 * * *".into();
    InstanceTest::with(services())
        .given(given)
        .when(InstanceCommand::PutBackupSchedule(renamed.clone()))
        .then_expect_events(vec![InstanceEvent::BackupSchedulesChanged { schedules: vec![renamed] }]);

    let full: Vec<BackupSchedule> = (0..MAX_SCHEDULES).map(|n| schedule(&format!("s{n:02}"))).collect();
    let refused = rules(
        InstanceTest::with(services())
            .given(vec![pg16(), InstanceEvent::BackupSchedulesChanged { schedules: full }])
            .when(InstanceCommand::PutBackupSchedule(schedule("one-more")))
            .inspect_result(),
    );
    assert_eq!(refused, [(String::new(), "max_schedules")]);
}

#[test]
fn a_schedule_is_removed_and_an_unknown_one_is_not_found() {
    let nightly = schedule("nightly");
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::BackupSchedulesChanged { schedules: vec![nightly.clone()] }])
        .when(InstanceCommand::RemoveBackupSchedule { id: nightly.id })
        .then_expect_events(vec![InstanceEvent::BackupSchedulesChanged { schedules: vec![] }]);
    let unknown = Uuid::now_v7();
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::RemoveBackupSchedule { id: unknown })
        .then_expect_error(InstanceError::ScheduleNotFound { id: unknown });
}

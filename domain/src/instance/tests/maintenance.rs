//! Given / when / then: maintenance windows, and restart-mode changes held for them.

use chrono::{DateTime, Utc};

use super::*;
use crate::instance::maintenance::{
    MaintenanceTrigger, MaintenanceWindow, PendingConfiguration, PendingMaintenance, Weekday,
};

fn at(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().unwrap()
}

/// Inside the platform's default window (Sunday 02:00 UTC for four hours): 2026-12-06 is a Sunday.
fn inside() -> DateTime<Utc> {
    at("2026-12-06T03:00:00Z")
}

/// Outside it: the Monday after.
fn outside() -> DateTime<Utc> {
    at("2026-12-07T10:00:00Z")
}

fn set_config(now: DateTime<Utc>, entries: &[(&str, Option<ConfigValue>)]) -> InstanceCommand {
    update(|u| {
        u.config = Some(entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
        u.now = Some(now);
    })
}

fn held(config: Config, parameters: &[&str]) -> InstanceEvent {
    InstanceEvent::PendingMaintenanceChanged {
        pending: PendingMaintenance {
            configuration: Some(PendingConfiguration {
                config,
                parameters: parameters.iter().map(|p| (*p).to_owned()).collect(),
            }),
            version: None,
        },
    }
}

fn changed(config: Config, changed: &[&str], restart: &[&str]) -> InstanceEvent {
    InstanceEvent::ConfigurationChanged {
        config,
        changed: changed.iter().map(|p| (*p).to_owned()).collect(),
        restart: restart.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[test]
fn a_restart_parameter_changed_outside_the_window_is_held_and_the_running_configuration_stays() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(set_config(outside(), &[("max_connections", Some(ConfigValue::Int(300)))]))
        .then_expect_events(vec![held(
            config([("max_connections", ConfigValue::Int(300))]),
            &["max_connections"],
        )]);
}

#[test]
fn inside_the_window_a_restart_parameter_is_applied_at_once() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(set_config(inside(), &[("max_connections", Some(ConfigValue::Int(300)))]))
        .then_expect_events(vec![changed(
            config([("max_connections", ConfigValue::Int(300))]),
            &["max_connections"],
            &["max_connections"],
        )]);
}

#[test]
fn outside_the_window_dynamic_parameters_apply_at_once_and_only_the_restart_ones_wait() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(set_config(
            outside(),
            &[
                ("max_connections", Some(ConfigValue::Int(300))),
                ("work_mem_kib", Some(ConfigValue::Int(8192))),
            ],
        ))
        .then_expect_events(vec![
            held(
                config([
                    ("max_connections", ConfigValue::Int(300)),
                    ("work_mem_kib", ConfigValue::Int(8192)),
                ]),
                &["max_connections"],
            ),
            changed(
                config([
                    ("max_connections", ConfigValue::Int(200)),
                    ("work_mem_kib", ConfigValue::Int(8192)),
                ]),
                &["work_mem_kib"],
                &[],
            ),
        ]);
}

#[test]
fn a_change_while_something_is_held_builds_on_what_is_held() {
    InstanceTest::with(services())
        .given(vec![pg16(), held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"])])
        .when(set_config(outside(), &[("work_mem_kib", Some(ConfigValue::Int(8192)))]))
        .then_expect_events(vec![
            held(
                config([
                    ("max_connections", ConfigValue::Int(300)),
                    ("work_mem_kib", ConfigValue::Int(8192)),
                ]),
                &["max_connections"],
            ),
            changed(
                config([
                    ("max_connections", ConfigValue::Int(200)),
                    ("work_mem_kib", ConfigValue::Int(8192)),
                ]),
                &["work_mem_kib"],
                &[],
            ),
        ]);
}

#[test]
fn setting_a_held_parameter_back_to_what_runs_cancels_the_held_change() {
    InstanceTest::with(services())
        .given(vec![pg16(), held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"])])
        .when(set_config(outside(), &[("max_connections", Some(ConfigValue::Int(200)))]))
        .then_expect_events(vec![InstanceEvent::PendingMaintenanceChanged {
            pending: PendingMaintenance::default(),
        }]);
}

#[test]
fn apply_now_applies_what_is_held_naming_its_restart_parameters() {
    InstanceTest::with(services())
        .given(vec![pg16(), held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"])])
        .when(InstanceCommand::ApplyMaintenance { trigger: MaintenanceTrigger::Customer })
        .then_expect_events(vec![
            InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Customer },
            changed(
                config([("max_connections", ConfigValue::Int(300))]),
                &["max_connections"],
                &["max_connections"],
            ),
        ]);
}

#[test]
fn applying_when_nothing_is_held_changes_nothing_and_not_once_deprovisioning_began() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::ApplyMaintenance { trigger: MaintenanceTrigger::Window })
        .then_expect_events(vec![]);
    InstanceTest::with(services())
        .given(vec![
            pg16(),
            held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"]),
            InstanceEvent::DeprovisioningStarted {},
        ])
        .when(InstanceCommand::ApplyMaintenance { trigger: MaintenanceTrigger::Customer })
        .then_expect_error(InstanceError::Deprovisioning);
}

#[test]
fn held_maintenance_changes_no_aspect_and_applying_it_clears_it_and_changes_the_configuration() {
    let mut instance = Instance::default();
    instance.apply(pg16());
    instance.apply(held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"]));
    let spec = instance.spec().unwrap();
    assert_eq!(spec.config, config([("max_connections", ConfigValue::Int(200))]), "the cluster runs this");
    assert!(!spec.pending_maintenance.is_empty());
    assert_eq!(instance.generations().configuration, 1, "nothing for the cluster to apply yet");
    instance.apply(InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Window });
    instance.apply(changed(
        config([("max_connections", ConfigValue::Int(300))]),
        &["max_connections"],
        &["max_connections"],
    ));
    assert!(instance.spec().unwrap().pending_maintenance.is_empty());
    assert_eq!(instance.generations().configuration, 4);
}

fn window(day: Weekday, start: &str, duration_minutes: u32, time_zone: &str) -> MaintenanceWindow {
    MaintenanceWindow { day, start: start.into(), duration_minutes, time_zone: time_zone.into() }
}

#[test]
fn a_window_is_set_at_provision_and_changed_by_an_update_and_a_bad_one_is_named_field_by_field() {
    let tuesday = window(Weekday::Tuesday, "03:30", 120, "Europe/Berlin");
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.maintenance_window = Some(tuesday.clone());
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .then_expect_events(vec![
            {
                let InstanceEvent::InstanceProvisioned(mut p) = pg16() else { unreachable!() };
                p.config = config([("max_connections", ConfigValue::Int(200))]);
                InstanceEvent::InstanceProvisioned(p)
            },
            InstanceEvent::MaintenanceWindowChanged { window: tuesday.clone() },
        ]);
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.maintenance_window = Some(tuesday.clone())))
        .then_expect_events(vec![InstanceEvent::MaintenanceWindowChanged { window: tuesday.clone() }]);
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::MaintenanceWindowChanged { window: tuesday.clone() }])
        .when(update(|u| u.maintenance_window = Some(tuesday.clone())))
        .then_expect_events(vec![]);

    let bad = window(Weekday::Monday, "2:00", 10, "Mars/Olympus");
    let result = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.maintenance_window = Some(bad.clone())))
        .inspect_result();
    let Err(InstanceError::InvalidFields(violations)) = result else { panic!("{result:?}") };
    let named: Vec<(&str, &str)> = violations.iter().map(|v| (v.field.as_str(), v.rule)).collect();
    assert_eq!(
        named,
        [
            ("/maintenance_window/start", "time_of_day"),
            ("/maintenance_window/duration_minutes", "range"),
            ("/maintenance_window/time_zone", "iana_time_zone"),
        ]
    );
    for (start, duration, ok) in [
        ("23:59", 30, true),
        ("24:00", 30, false),
        ("00:00", 1440, true),
        ("00:00", 1441, false),
        ("00:00", 29, false),
    ] {
        assert_eq!(
            window(Weekday::Monday, start, duration, "UTC").check("/w").is_ok(),
            ok,
            "{start} {duration}"
        );
    }
}

#[test]
fn a_window_opens_on_its_day_at_its_local_time_and_closes_after_its_duration() {
    // Tuesday 03:30 in Berlin is 02:30 UTC in winter (CET, +1).
    let berlin = window(Weekday::Tuesday, "03:30", 120, "Europe/Berlin");
    assert!(!berlin.is_open(at("2026-12-08T02:29:59Z")));
    assert!(berlin.is_open(at("2026-12-08T02:30:00Z")));
    assert!(berlin.is_open(at("2026-12-08T04:29:59Z")));
    assert!(!berlin.is_open(at("2026-12-08T04:30:00Z")));
    assert_eq!(berlin.next_opening(at("2026-12-06T12:00:00Z")), Some(at("2026-12-08T02:30:00Z")));
    assert_eq!(berlin.next_opening(at("2026-12-08T03:00:00Z")), Some(at("2026-12-08T02:30:00Z")), "open now");
    assert_eq!(berlin.next_opening(at("2026-12-08T04:30:00Z")), Some(at("2026-12-15T02:30:00Z")));
    // In summer (CEST, +2) the same local time is 01:30 UTC.
    assert_eq!(berlin.next_opening(at("2027-06-01T00:00:00Z")), Some(at("2027-06-01T01:30:00Z")));
    // A window across midnight stays open into the next day.
    let late = window(Weekday::Sunday, "23:00", 180, "UTC");
    assert!(late.is_open(at("2026-12-07T01:59:00Z")));
    assert!(!late.is_open(at("2026-12-07T02:00:00Z")));
    // A start inside the spring-forward gap (02:30 does not exist in Berlin on 2027-03-28) opens at the
    // first local time after it, 03:30 CEST.
    let gap = window(Weekday::Sunday, "02:30", 60, "Europe/Berlin");
    assert_eq!(gap.next_opening(at("2027-03-27T00:00:00Z")), Some(at("2027-03-28T01:30:00Z")));
}

#[test]
fn a_change_asked_inside_the_window_applies_what_was_held_with_it() {
    InstanceTest::with(services())
        .given(vec![pg16(), held(config([("max_connections", ConfigValue::Int(300))]), &["max_connections"])])
        .when(set_config(inside(), &[("work_mem_kib", Some(ConfigValue::Int(8192)))]))
        .then_expect_events(vec![
            InstanceEvent::PendingMaintenanceChanged { pending: PendingMaintenance::default() },
            changed(
                config([
                    ("max_connections", ConfigValue::Int(300)),
                    ("work_mem_kib", ConfigValue::Int(8192)),
                ]),
                &["max_connections", "work_mem_kib"],
                &["max_connections"],
            ),
        ]);
}

#[test]
fn without_a_time_the_change_applies_at_once() {
    // Callers with no clock (tests of other rules) keep the behaviour from before windows existed.
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| {
            u.config = Some([("max_connections".to_owned(), Some(ConfigValue::Int(300)))].into());
        }))
        .then_expect_events(vec![changed(
            config([("max_connections", ConfigValue::Int(300))]),
            &["max_connections"],
            &["max_connections"],
        )]);
}

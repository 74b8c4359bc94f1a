//! Given / when / then: a version upgrade the platform rolls out, held for the maintenance window and
//! released with what else is held.

use super::*;
use crate::instance::maintenance::{
    MaintenanceTrigger, PendingConfiguration, PendingMaintenance, PendingVersion, check_rollout,
};

fn rollout() -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042)
}

fn influx26() -> InstanceEvent {
    provisioned(ServiceType::Influxdb, "2.6")
}

fn hold_27() -> InstanceCommand {
    InstanceCommand::HoldVersionUpgrade { to: "2.7".into(), rollout: rollout() }
}

fn held_27() -> PendingVersion {
    PendingVersion { from: "2.6".into(), to: "2.7".into(), rollout: rollout() }
}

fn held(pending: PendingMaintenance) -> InstanceEvent {
    InstanceEvent::PendingMaintenanceChanged { pending }
}

#[test]
fn a_rolled_out_upgrade_is_held_not_applied_and_holding_it_again_changes_nothing() {
    InstanceTest::with(services())
        .given(vec![influx26()])
        .when(hold_27())
        .then_expect_events(vec![held(PendingMaintenance { configuration: None, version: Some(held_27()) })]);
    InstanceTest::with(services())
        .given(vec![influx26(), held(PendingMaintenance { configuration: None, version: Some(held_27()) })])
        .when(hold_27())
        .then_expect_events(vec![]);
    InstanceTest::with(services())
        .given(vec![influx26(), InstanceEvent::VersionUpgraded { from: "2.6".into(), to: "2.7".into() }])
        .when(hold_27())
        .then_expect_events(vec![]);
}

#[test]
fn a_held_upgrade_keeps_a_held_configuration_and_applying_releases_both_version_first() {
    let configuration = PendingConfiguration {
        config: config([("max_connections", ConfigValue::Int(300))]),
        parameters: vec!["max_connections".into()],
    };
    let both = PendingMaintenance { configuration: Some(configuration.clone()), version: Some(held_27()) };
    InstanceTest::with(services())
        .given(vec![
            influx26(),
            held(PendingMaintenance { configuration: Some(configuration), version: None }),
        ])
        .when(hold_27())
        .then_expect_events(vec![held(both.clone())]);
    InstanceTest::with(services())
        .given(vec![influx26(), held(PendingMaintenance { configuration: None, version: Some(held_27()) })])
        .when(InstanceCommand::ApplyMaintenance { trigger: MaintenanceTrigger::Window })
        .then_expect_events(vec![
            InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Window },
            InstanceEvent::VersionUpgraded { from: "2.6".into(), to: "2.7".into() },
        ]);
    let mut instance = Instance::default();
    instance.apply(influx26());
    instance.apply(held(both));
    instance.apply(InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Customer });
    instance.apply(InstanceEvent::VersionUpgraded { from: "2.6".into(), to: "2.7".into() });
    let spec = instance.spec().unwrap();
    assert!(spec.pending_maintenance.is_empty());
    assert_eq!(spec.rolled_out, Some(held_27()), "the rollout is remembered as what gave the version");
    instance.apply(InstanceEvent::VersionUpgraded { from: "2.7".into(), to: "2.8".into() });
    assert_eq!(instance.spec().unwrap().rolled_out, None, "until another version change");
}

#[test]
fn a_customer_s_version_change_drops_the_held_one_and_a_configuration_change_keeps_it() {
    InstanceTest::with(services())
        .given(vec![
            provisioned(ServiceType::Grafana, "10.4"),
            held(PendingMaintenance {
                configuration: None,
                version: Some(PendingVersion { from: "10.4".into(), to: "10.5".into(), rollout: rollout() }),
            }),
        ])
        .when(update(|u| u.version = Some("11.6".into())))
        .then_expect_events(vec![
            InstanceEvent::VersionUpgraded { from: "10.4".into(), to: "11.6".into() },
            held(PendingMaintenance::default()),
        ]);
    InstanceTest::with(services())
        .given(vec![influx26(), held(PendingMaintenance { configuration: None, version: Some(held_27()) })])
        .when(update(|u| u.description = Some("metrics".into())))
        .then_expect_events(vec![InstanceEvent::DescriptionChanged { description: "metrics".into() }]);
}

#[test]
fn a_rollout_is_a_catalog_upgrade_within_one_major_named_by_its_request_fields() {
    let catalog = crate::catalog::Catalog::builtin();
    let offering = |s| catalog.offering(s).unwrap();
    assert_eq!(check_rollout(offering(ServiceType::Influxdb), "2.6", "2.7"), Ok(()));
    for (service, from, to, field, rule) in [
        (ServiceType::Postgresql, "16", "17", "/to_version", "same_major"),
        (ServiceType::Grafana, "11.6", "12.2", "/to_version", "same_major"),
        (ServiceType::Mongodb, "6.0", "8.0", "/to_version", "one_major_at_a_time"),
        (ServiceType::Influxdb, "2.7", "2.6", "/to_version", "no_downgrade"),
        (ServiceType::Influxdb, "2.6", "2.9", "/to_version", "offered_version"),
        (ServiceType::Influxdb, "2.5", "2.7", "/from_version", "offered_version"),
        (ServiceType::Influxdb, "2.7", "2.7", "/to_version", "newer_version"),
    ] {
        assert_eq!(
            rule_of(check_rollout(offering(service), from, to).map(|()| vec![])),
            (field.to_owned(), rule),
            "{service} {from} → {to}"
        );
    }
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::HoldVersionUpgrade { to: "17".into(), rollout: rollout() })
        .then_expect_error(InstanceError::Invalid {
            field: "/to_version".into(),
            rule: "same_major",
            message: "a rollout stays within a major version (16 → 17 changes major 16 to 17); a major \
                      upgrade is each customer's, by PATCH"
                .into(),
        });
}

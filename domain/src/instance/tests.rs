//! Given / when / then: the rules of the Instance aggregate.

use std::sync::Arc;

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::{catalog::ConfigValue, names::InMemoryNameRegistry};

mod credentials;
mod maintenance;
mod migration;
mod network;
mod parameter_versions;
mod restore;
mod rollout;
mod schedules;
mod users;
mod wire_form;

pub(super) type InstanceTest = TestFramework<Instance>;

pub(super) fn services() -> InstanceServices {
    InstanceServices::new(Arc::new(InMemoryNameRegistry::default()))
}

pub(super) fn id() -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001)
}

pub(super) fn provision(service: ServiceType, version: &str) -> ProvisionInstance {
    ProvisionInstance {
        instance_id: id(),
        project: "acme".into(),
        name: "orders-db".into(),
        service,
        version: version.into(),
        plan: "standard".into(),
        storage_gib: None,
        config: config([("max_connections", ConfigValue::Int(200))]),
        description: "orders".into(),
        deletion_protection: false,
        cluster: "eu-1".into(),
        acl: Vec::new(),
        allow_public: false,
        restore: None,
        maintenance_window: None,
    }
}

pub(super) fn provisioned(service: ServiceType, version: &str) -> InstanceEvent {
    let cmd = provision(service, version);
    let config = if service == ServiceType::Postgresql { cmd.config } else { Config::new() };
    InstanceEvent::InstanceProvisioned(InstanceProvisioned {
        instance_id: cmd.instance_id,
        project: cmd.project,
        name: cmd.name,
        service,
        version: cmd.version,
        plan: cmd.plan,
        resources: Resources { cpu_millis: 2000, memory_mib: 8192, replicas: 1 },
        storage_gib: 50,
        config,
        description: cmd.description,
        deletion_protection: false,
        cluster: cmd.cluster,
    })
}

pub(super) fn pg16() -> InstanceEvent {
    provisioned(ServiceType::Postgresql, "16")
}

pub(super) fn update(f: impl FnOnce(&mut UpdateInstance)) -> InstanceCommand {
    let mut cmd = UpdateInstance::default();
    f(&mut cmd);
    InstanceCommand::Update(cmd)
}

pub(super) fn rule_of(result: Result<Vec<InstanceEvent>, InstanceError>) -> (String, &'static str) {
    match result {
        Err(InstanceError::Invalid { field, rule, .. }) => (field, rule),
        other => panic!("expected a rule violation, got {other:?}"),
    }
}

#[test]
fn provision_with_plan_defaults_emits_fat_event() {
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(provision(ServiceType::Postgresql, "16")))
        .then_expect_events(vec![pg16()]);
}

#[test]
fn provision_rejects_a_name_that_is_not_a_dns_label() {
    for bad in ["Orders", "-orders", "orders-", "", "orders_db", &"a".repeat(64), "ord.ers"] {
        let mut cmd = provision(ServiceType::Postgresql, "16");
        cmd.name = bad.to_owned();
        let result = InstanceTest::with(services())
            .given_no_previous_events()
            .when(InstanceCommand::Provision(cmd))
            .inspect_result();
        assert_eq!(rule_of(result), ("/name".into(), "dns1123_label"), "name {bad:?}");
    }
}

#[test]
fn provision_rejects_a_reserved_project_or_one_too_long_for_its_namespace() {
    for (project, rule) in
        [("system", "not_reserved"), (&"a".repeat(61), "max_length"), ("Acme", "dns1123_label")]
    {
        let mut cmd = provision(ServiceType::Postgresql, "16");
        cmd.project = project.to_owned();
        let result = InstanceTest::with(services())
            .given_no_previous_events()
            .when(InstanceCommand::Provision(cmd))
            .inspect_result();
        assert_eq!(rule_of(result), ("/project".into(), rule), "project {project:?}");
    }
}

#[test]
fn provision_rejects_versions_and_plans_the_catalog_does_not_offer() {
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(provision(ServiceType::Postgresql, "9.6")))
        .inspect_result();
    assert_eq!(rule_of(result), ("/version".into(), "offered_version"));

    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.plan = "gigantic".into();
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .inspect_result();
    assert_eq!(rule_of(result), ("/plan".into(), "offered_plan"));
}

#[test]
fn provision_rejects_storage_below_the_plan_and_unknown_config() {
    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.storage_gib = Some(5);
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .inspect_result();
    assert_eq!(rule_of(result), ("/storage_gib".into(), "storage_at_least_plan"));

    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.config = config([("shared_preload_libraries", ConfigValue::Text("evil".into()))]);
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .inspect_result();
    assert_eq!(rule_of(result), ("/config/shared_preload_libraries".into(), "known_config_key"));

    let mut cmd = provision(ServiceType::Postgresql, "16");
    cmd.config = config([("max_connections", ConfigValue::Int(1))]);
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(cmd))
        .inspect_result();
    assert_eq!(rule_of(result), ("/config/max_connections".into(), "config_value"));
}

#[tokio::test]
async fn provision_of_a_name_held_by_another_instance_is_refused() {
    let services = services();
    let other = Uuid::from_u128(42);
    services.names.reserve("acme", "orders-db", other).await.unwrap();
    let result = InstanceTest::with(services)
        .given_no_previous_events()
        .when_async(InstanceCommand::Provision(provision(ServiceType::Postgresql, "16")))
        .await
        .inspect_result();
    assert_eq!(result, Err(InstanceError::NameTaken { name: "orders-db".into(), holder: other }));
}

#[test]
fn a_retried_provision_changes_nothing_and_a_different_one_conflicts() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Provision(provision(ServiceType::Postgresql, "16")))
        .then_expect_events(vec![]);
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Provision(provision(ServiceType::Postgresql, "17")))
        .then_expect_error(InstanceError::AlreadyExists);
}

#[test]
fn upgrade_moves_forward_only() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.version = Some("17".into())))
        .then_expect_events(vec![InstanceEvent::VersionUpgraded { from: "16".into(), to: "17".into() }]);
    let result = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.version = Some("15".into())))
        .inspect_result();
    assert_eq!(rule_of(result), ("/version".into(), "no_downgrade"));
}

#[test]
fn postgresql_may_skip_majors_but_mongodb_may_not() {
    InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Postgresql, "14")])
        .when(update(|u| u.version = Some("17".into())))
        .then_expect_events(vec![InstanceEvent::VersionUpgraded { from: "14".into(), to: "17".into() }]);
    let result = InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Mongodb, "6.0")])
        .when(update(|u| u.version = Some("8.0".into())))
        .inspect_result();
    assert_eq!(rule_of(result), ("/version".into(), "one_major_at_a_time"));
    InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Mongodb, "6.0")])
        .when(update(|u| u.version = Some("7.0".into())))
        .then_expect_events(vec![InstanceEvent::VersionUpgraded { from: "6.0".into(), to: "7.0".into() }]);
}

#[test]
fn storage_never_shrinks() {
    let result = InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.storage_gib = Some(20)))
        .inspect_result();
    assert_eq!(rule_of(result), ("/storage_gib".into(), "storage_never_shrinks"));
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.storage_gib = Some(80)))
        .then_expect_events(vec![InstanceEvent::StorageExpanded { from_gib: 50, to_gib: 80 }]);
}

#[test]
fn a_smaller_plan_keeps_the_storage_it_has() {
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::StorageExpanded { from_gib: 50, to_gib: 80 }])
        .when(update(|u| u.plan = Some("starter".into())))
        .then_expect_events(vec![InstanceEvent::PlanChanged {
            from: "standard".into(),
            to: "starter".into(),
            resources: Resources { cpu_millis: 500, memory_mib: 1024, replicas: 1 },
            storage_gib: 80,
        }]);
}

#[test]
fn a_bigger_plan_grows_storage_to_its_minimum() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| u.plan = Some("ha".into())))
        .then_expect_events(vec![InstanceEvent::PlanChanged {
            from: "standard".into(),
            to: "ha".into(),
            resources: Resources { cpu_millis: 2000, memory_mib: 8192, replicas: 3 },
            storage_gib: 100,
        }]);
}

#[test]
fn config_changes_merge_and_carry_the_whole_result() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| {
            u.config = Some(
                [
                    ("max_connections".to_owned(), None),
                    ("track_io_timing".to_owned(), Some(ConfigValue::Bool(true))),
                ]
                .into(),
            );
        }))
        .then_expect_events(vec![InstanceEvent::ConfigurationChanged {
            config: config([("track_io_timing", ConfigValue::Bool(true))]),
            changed: vec!["max_connections".into(), "track_io_timing".into()],
            // max_connections takes a restart (PostgreSQL's postmaster context); track_io_timing does not
            restart: vec!["max_connections".into()],
        }]);
}

#[test]
fn a_config_change_names_only_the_parameters_whose_value_moved() {
    let given = vec![pg16()];
    let current = match &given[0] {
        InstanceEvent::InstanceProvisioned(p) => p.config.clone(),
        other => panic!("{other:?}"),
    };
    let (key, value) = current.iter().next().map(|(k, v)| (k.clone(), v.clone())).expect("pg16 has config");
    InstanceTest::with(services())
        .given(given.clone())
        .when(update(|u| u.config = Some([(key.clone(), Some(value.clone()))].into())))
        .then_expect_events(vec![]);
    InstanceTest::with(services())
        .given(given)
        .when(update(|u| {
            u.config = Some(
                [
                    (key.clone(), Some(value.clone())),
                    ("track_io_timing".to_owned(), Some(ConfigValue::Bool(true))),
                ]
                .into(),
            )
        }))
        .then_expect_events(vec![InstanceEvent::ConfigurationChanged {
            config: {
                let mut config = current.clone();
                config.insert("track_io_timing".into(), ConfigValue::Bool(true));
                config
            },
            changed: vec!["track_io_timing".into()],
            restart: vec![],
        }]);
}

#[test]
fn one_update_may_change_several_aspects_in_order() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| {
            u.version = Some("17".into());
            u.description = Some("orders, v2".into());
            u.deletion_protection = Some(true);
        }))
        .then_expect_events(vec![
            InstanceEvent::VersionUpgraded { from: "16".into(), to: "17".into() },
            InstanceEvent::DescriptionChanged { description: "orders, v2".into() },
            InstanceEvent::DeletionProtectionChanged { enabled: true },
        ]);
}

#[test]
fn a_command_that_changes_nothing_emits_no_event() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| {
            u.version = Some("16".into());
            u.plan = Some("standard".into());
            u.storage_gib = Some(50);
            u.config = Some([("max_connections".to_owned(), Some(ConfigValue::Int(200)))].into());
            u.description = Some("orders".into());
            u.deletion_protection = Some(false);
        }))
        .then_expect_events(vec![]);
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::DeprovisioningStarted {}])
        .when(InstanceCommand::Deprovision)
        .then_expect_events(vec![]);
}

#[test]
fn only_deprovision_is_accepted_once_deprovisioning_began() {
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::DeprovisioningStarted {}])
        .when(update(|u| u.version = Some("17".into())))
        .then_expect_error(InstanceError::Deprovisioning);
}

#[test]
fn deletion_protection_refuses_deprovision() {
    InstanceTest::with(services())
        .given(vec![pg16(), InstanceEvent::DeletionProtectionChanged { enabled: true }])
        .when(InstanceCommand::Deprovision)
        .then_expect_error(InstanceError::DeletionProtected);
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::Deprovision)
        .then_expect_events(vec![InstanceEvent::DeprovisioningStarted {}]);
}

#[test]
fn commands_on_an_unknown_instance_are_not_found() {
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(update(|u| u.version = Some("17".into())))
        .then_expect_error(InstanceError::NotFound);
    InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Deprovision)
        .then_expect_error(InstanceError::NotFound);
}

#[test]
fn upgrade_targets_follow_each_service_s_upgrade_path() {
    let postgres = Catalog::builtin().offering(ServiceType::Postgresql).unwrap();
    assert_eq!(crate::instance::upgrade_targets(postgres, "15"), ["16", "17", "18"]);
    let mongo = Catalog::builtin().offering(ServiceType::Mongodb).unwrap();
    assert_eq!(crate::instance::upgrade_targets(mongo, "6.0"), ["7.0"], "one major version at a time");
    assert!(crate::instance::upgrade_targets(mongo, "8.0").is_empty());
}

#[test]
fn a_config_change_names_every_bad_parameter_at_once() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(update(|u| {
            u.config = Some(
                [
                    ("max_connections".to_owned(), Some(ConfigValue::Int(1_000_000))),
                    ("shared_preload_libraries".to_owned(), Some(ConfigValue::Text("x".into()))),
                    ("data_checksums".to_owned(), Some(ConfigValue::Bool(true))),
                ]
                .into(),
            );
        }))
        .then_expect_error_message(
            "/config/data_checksums: data_checksums is set at provision only; provision a new instance to \
             change it; /config/max_connections: must be an integer from 10 to 5000; \
             /config/shared_preload_libraries: postgresql accepts the keys max_connections, work_mem_kib, \
             log_min_duration_statement_ms, track_io_timing, data_checksums, wal_level",
        );
}

#[test]
fn an_immutable_parameter_is_set_at_provision_and_kept() {
    let mut provision = provision(ServiceType::Postgresql, "16");
    provision.config.insert("data_checksums".into(), ConfigValue::Bool(true));
    let result = InstanceTest::with(services())
        .given_no_previous_events()
        .when(InstanceCommand::Provision(provision))
        .inspect_result();
    assert!(result.is_ok(), "{result:?}");
    // Setting it to the value it has changes nothing; other parameters still change.
    let mut with_checksums = provisioned(ServiceType::Postgresql, "16");
    if let InstanceEvent::InstanceProvisioned(p) = &mut with_checksums {
        p.config.insert("data_checksums".into(), ConfigValue::Bool(true));
    }
    InstanceTest::with(services())
        .given(vec![with_checksums])
        .when(update(|u| {
            u.config = Some([("data_checksums".to_owned(), Some(ConfigValue::Bool(true)))].into())
        }))
        .then_expect_events(vec![]);
}

//! Given / when / then: per-application users (issue 27).

use super::*;
use crate::instance::users::{MAX_USERS, User, user_roles};

fn created(name: &str, role: &str) -> InstanceEvent {
    InstanceEvent::UserCreated { name: name.into(), role: role.into() }
}

fn create(name: &str, role: &str) -> InstanceCommand {
    InstanceCommand::CreateUser { name: name.into(), role: role.into() }
}

#[test]
fn a_user_is_created_with_its_name_and_role_and_no_password() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(create("reporting", "readonly"))
        .then_expect_events(vec![created("reporting", "readonly")]);
    let json = serde_json::to_string(&created("reporting", "readonly")).unwrap();
    assert!(!json.contains("password"), "{json}");
}

#[test]
fn a_user_name_must_be_an_engine_safe_identifier() {
    for bad in ["", "Reporting", "1app", "_x", "x_", "re-porting", "re.porting", "rép", &"a".repeat(64)] {
        let result =
            InstanceTest::with(services()).given(vec![pg16()]).when(create(bad, "readonly")).inspect_result();
        assert_eq!(rule_of(result), ("/name".into(), "user_name"), "name {bad:?}");
    }
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(create(&format!("a{}", "_b".repeat(31)), "readonly"))
        .then_expect_events(vec![created(&format!("a{}", "_b".repeat(31)), "readonly")]);
}

#[test]
fn reserved_names_and_the_admin_user_s_are_refused() {
    for reserved in
        ["postgres", "streaming_replica", "admin", "app", "root", "public", "pg_monitor", "cnpg_x"]
    {
        let result = InstanceTest::with(services())
            .given(vec![pg16()])
            .when(create(reserved, "readwrite"))
            .inspect_result();
        assert_eq!(rule_of(result), ("/name".into(), "user_name_reserved"), "name {reserved:?}");
    }
}

#[test]
fn the_role_comes_from_the_service_s_catalog() {
    let result =
        InstanceTest::with(services()).given(vec![pg16()]).when(create("etl", "superuser")).inspect_result();
    assert_eq!(rule_of(result), ("/role".into(), "offered_role"));
    // MongoDB's role names are not PostgreSQL's.
    let result =
        InstanceTest::with(services()).given(vec![pg16()]).when(create("etl", "readWrite")).inspect_result();
    assert_eq!(rule_of(result), ("/role".into(), "offered_role"));
    assert_eq!(user_roles(ServiceType::Postgresql), ["readwrite", "readonly"]);
    assert_eq!(user_roles(ServiceType::Mongodb), ["readWrite", "read"]);
    assert_eq!(user_roles(ServiceType::Influxdb), ["write", "read"]);
    assert_eq!(user_roles(ServiceType::Grafana), ["Editor", "Viewer"]);
}

#[test]
fn every_service_of_the_catalog_has_users() {
    for service in
        [ServiceType::Postgresql, ServiceType::Mongodb, ServiceType::Influxdb, ServiceType::Grafana]
    {
        assert!(crate::instance::users::check_supported(service).is_ok(), "{service}");
    }
}

#[test]
fn a_grafana_user_is_a_service_account_with_a_role_from_its_catalog() {
    let offering = Catalog::builtin().offering(ServiceType::Grafana).unwrap();
    let version = offering.versions[0].clone();
    for role in ["Editor", "Viewer"] {
        InstanceTest::with(services())
            .given(vec![provisioned(ServiceType::Grafana, &version)])
            .when(create("dash", role))
            .then_expect_events(vec![created("dash", role)]);
    }
    let result = InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Grafana, &version)])
        .when(create("dash", "Admin"))
        .inspect_result();
    assert_eq!(rule_of(result), ("/role".into(), "offered_role"));
}

#[test]
fn an_influxdb_user_is_a_token_with_a_role_from_its_catalog() {
    let offering = Catalog::builtin().offering(ServiceType::Influxdb).unwrap();
    let version = offering.versions[0].clone();
    for role in ["write", "read"] {
        InstanceTest::with(services())
            .given(vec![provisioned(ServiceType::Influxdb, &version)])
            .when(create("ingest", role))
            .then_expect_events(vec![created("ingest", role)]);
    }
    let result = InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Influxdb, &version)])
        .when(create("ingest", "readWrite"))
        .inspect_result();
    assert_eq!(rule_of(result), ("/role".into(), "offered_role"));
}

#[test]
fn a_duplicate_user_is_refused() {
    InstanceTest::with(services())
        .given(vec![pg16(), created("etl", "readwrite")])
        .when(create("etl", "readwrite"))
        .then_expect_error(InstanceError::UserExists { name: "etl".into() });
    // Deleted, the name is free again.
    InstanceTest::with(services())
        .given(vec![pg16(), created("etl", "readwrite"), InstanceEvent::UserDeleted { name: "etl".into() }])
        .when(create("etl", "readonly"))
        .then_expect_events(vec![created("etl", "readonly")]);
}

#[test]
fn an_instance_has_at_most_so_many_users() {
    let mut given = vec![pg16()];
    given.extend((0..MAX_USERS).map(|i| created(&format!("u{i}"), "readonly")));
    let result =
        InstanceTest::with(services()).given(given).when(create("one_more", "readonly")).inspect_result();
    assert_eq!(rule_of(result), ("/name".into(), "max_items"));
}

#[test]
fn deleting_or_rotating_an_unknown_user_is_not_found() {
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::DeleteUser { name: "etl".into() })
        .then_expect_error(InstanceError::UserNotFound { name: "etl".into() });
    InstanceTest::with(services())
        .given(vec![pg16()])
        .when(InstanceCommand::RotateUserPassword { name: "etl".into() })
        .then_expect_error(InstanceError::UserNotFound { name: "etl".into() });
}

#[test]
fn deleting_and_rotating_a_user_are_recorded_without_any_password() {
    InstanceTest::with(services())
        .given(vec![pg16(), created("etl", "readwrite")])
        .when(InstanceCommand::DeleteUser { name: "etl".into() })
        .then_expect_events(vec![InstanceEvent::UserDeleted { name: "etl".into() }]);
    // Like the instance's rotation, asking again is asking for another password: never a no-op.
    InstanceTest::with(services())
        .given(vec![
            pg16(),
            created("etl", "readwrite"),
            InstanceEvent::UserPasswordRotationRequested { name: "etl".into() },
        ])
        .when(InstanceCommand::RotateUserPassword { name: "etl".into() })
        .then_expect_events(vec![InstanceEvent::UserPasswordRotationRequested { name: "etl".into() }]);
}

#[test]
fn no_user_changes_once_deprovisioning_began() {
    for command in [
        create("etl", "readonly"),
        InstanceCommand::DeleteUser { name: "etl".into() },
        InstanceCommand::RotateUserPassword { name: "etl".into() },
    ] {
        InstanceTest::with(services())
            .given(vec![pg16(), created("etl", "readonly"), InstanceEvent::DeprovisioningStarted {}])
            .when(command)
            .then_expect_error(InstanceError::Deprovisioning);
    }
}

#[test]
fn deprovisioning_removes_every_user() {
    InstanceTest::with(services())
        .given(vec![pg16(), created("etl", "readwrite"), created("bi", "readonly")])
        .when(InstanceCommand::Deprovision)
        .then_expect_events(vec![
            InstanceEvent::UserDeleted { name: "bi".into() },
            InstanceEvent::UserDeleted { name: "etl".into() },
            InstanceEvent::DeprovisioningStarted {},
        ]);
}

#[test]
fn users_are_kept_sorted_with_the_generation_that_last_asked_for_them() {
    let mut instance = Instance::default();
    for event in [
        pg16(),
        created("etl", "readwrite"),
        created("bi", "readonly"),
        InstanceEvent::UserPasswordRotationRequested { name: "etl".into() },
    ] {
        instance.apply(event);
    }
    let users = &instance.spec().unwrap().users;
    assert_eq!(
        users,
        &[
            User { name: "bi".into(), role: "readonly".into(), generation: 3 },
            User { name: "etl".into(), role: "readwrite".into(), generation: 4 },
        ]
    );
    let generations = instance.generations();
    assert_eq!(generations.users, 4, "each user change changes the users aspect");
    assert_eq!((generations.version, generations.network_access, generations.credentials), (1, 1, 0));
    instance.apply(InstanceEvent::UserDeleted { name: "bi".into() });
    assert_eq!(instance.spec().unwrap().users.len(), 1);
    assert_eq!(instance.generations().users, 5);
}

#[test]
fn generations_and_specs_written_before_users_existed_read_without_any() {
    let old: Generations = serde_json::from_value(serde_json::json!({
        "version": 3, "resources": 2, "configuration": 1, "network_access": 1, "credentials": 0, "restore": 0
    }))
    .unwrap();
    assert_eq!(old.users, 0);
    let mut instance = Instance::default();
    instance.apply(pg16());
    let mut spec = serde_json::to_value(instance.spec().unwrap()).unwrap();
    assert!(spec.get("users").is_none(), "an instance without users writes no users field");
    spec.as_object_mut().unwrap().remove("users");
    let spec: InstanceSpec = serde_json::from_value(spec).unwrap();
    assert!(spec.users.is_empty());
}

#[test]
fn a_mongodb_user_takes_mongodb_s_roles() {
    InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Mongodb, "7.0")])
        .when(create("orders_app", "readWrite"))
        .then_expect_events(vec![created("orders_app", "readWrite")]);
    let result = InstanceTest::with(services())
        .given(vec![provisioned(ServiceType::Mongodb, "7.0")])
        .when(create("orders_app", "readwrite"))
        .inspect_result();
    assert_eq!(rule_of(result), ("/role".into(), "offered_role"));
}

//! The instance's events as a wire format: each round-trips, and each one's name, schema version and
//! JSON form are frozen (ARCHITECTURE.md, "events are a wire format").

use super::*;

#[test]
fn events_round_trip_through_their_wire_form() {
    let events = vec![
        pg16(),
        InstanceEvent::ConfigurationChanged {
            config: config([("wal_level", ConfigValue::Text("logical".into()))]),
            changed: vec!["wal_level".into()],
            restart: vec!["wal_level".into()],
        },
        InstanceEvent::DeprovisioningStarted {},
    ];
    for event in events {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.type_name());
        assert_eq!(serde_json::from_value::<InstanceEvent>(json).unwrap(), event);
    }
}

/// Every event's type name, schema and wire form, as literals: renaming a variant or a field, or
/// changing a payload without raising its schema, fails here rather than in a reader of old streams.
#[test]
fn every_event_s_name_schema_and_wire_form_are_frozen() {
    let id = uuid::Uuid::nil();
    let resources = Resources { cpu_millis: 500, memory_mib: 1024, replicas: 1 };
    let cases = [
        (
            InstanceEvent::InstanceProvisioned(InstanceProvisioned {
                instance_id: id,
                project: "acme".into(),
                name: "db".into(),
                service: ServiceType::Postgresql,
                version: "16".into(),
                plan: "starter".into(),
                resources,
                storage_gib: 10,
                config: config([("max_connections", ConfigValue::Int(100))]),
                description: "d".into(),
                deletion_protection: true,
                cluster: "eu-1".into(),
            }),
            "1",
            serde_json::json!({"type": "InstanceProvisioned", "data": {
                "instance_id": id, "project": "acme", "name": "db", "service": "postgresql", "version": "16",
                "plan": "starter", "resources": {"cpu_millis": 500, "memory_mib": 1024, "replicas": 1},
                "storage_gib": 10, "config": {"max_connections": 100}, "description": "d",
                "deletion_protection": true, "cluster": "eu-1"}}),
        ),
        (
            InstanceEvent::VersionUpgraded { from: "16".into(), to: "17".into() },
            "1",
            serde_json::json!({"type": "VersionUpgraded", "data": {"from": "16", "to": "17"}}),
        ),
        (
            InstanceEvent::PlanChanged { from: "a".into(), to: "b".into(), resources, storage_gib: 20 },
            "1",
            serde_json::json!({"type": "PlanChanged", "data": {"from": "a", "to": "b",
                "resources": {"cpu_millis": 500, "memory_mib": 1024, "replicas": 1}, "storage_gib": 20}}),
        ),
        (
            InstanceEvent::StorageExpanded { from_gib: 10, to_gib: 20 },
            "1",
            serde_json::json!({"type": "StorageExpanded", "data": {"from_gib": 10, "to_gib": 20}}),
        ),
        (
            InstanceEvent::ConfigurationChanged {
                config: config([("wal_level", ConfigValue::Text("logical".into()))]),
                changed: vec!["wal_level".into()],
                restart: vec!["wal_level".into()],
            },
            "3",
            serde_json::json!({"type": "ConfigurationChanged",
                "data": {"config": {"wal_level": "logical"}, "changed": ["wal_level"], "restart": ["wal_level"]}}),
        ),
        (
            InstanceEvent::NetworkAccessChanged { entries: vec![AclEntry::new("10.0.0.0/8", "office")] },
            "1",
            serde_json::json!({"type": "NetworkAccessChanged",
                "data": {"entries": [{"cidr": "10.0.0.0/8", "description": "office"}]}}),
        ),
        (
            InstanceEvent::DescriptionChanged { description: "x".into() },
            "1",
            serde_json::json!({"type": "DescriptionChanged", "data": {"description": "x"}}),
        ),
        (
            InstanceEvent::DeletionProtectionChanged { enabled: false },
            "1",
            serde_json::json!({"type": "DeletionProtectionChanged", "data": {"enabled": false}}),
        ),
        (
            InstanceEvent::BackupSchedulesChanged {
                schedules: vec![crate::instance::schedules::BackupSchedule {
                    id,
                    name: "nightly".into(),
                    cron: "30 2 * * *".into(),
                    time_zone: "UTC".into(),
                    enabled: true,
                    retention: crate::instance::schedules::Retention {
                        keep_last: Some(7),
                        max_age_days: None,
                    },
                }],
            },
            "1",
            serde_json::json!({"type": "BackupSchedulesChanged", "data": {"schedules": [{"id": id, "name": "nightly",
                "cron": "30 2 * * *", "time_zone": "UTC", "enabled": true,
                "retention": {"keep_last": 7, "max_age_days": null}}]}}),
        ),
        (
            InstanceEvent::RestoreRequested {
                restore: crate::instance::restore::RestoreSpec {
                    backup_id: id,
                    source_instance_id: id,
                    location: "acme/x/y".into(),
                    target_time: None,
                },
            },
            "1",
            serde_json::json!({"type": "RestoreRequested", "data": {"restore": {"backup_id": id,
                "source_instance_id": id, "location": "acme/x/y"}}}),
        ),
        (
            // A fork: the point in time is an optional field of the same schema.
            InstanceEvent::RestoreRequested {
                restore: crate::instance::restore::RestoreSpec {
                    backup_id: id,
                    source_instance_id: id,
                    location: "acme/x/orders/base/20261201T013000".into(),
                    target_time: Some(chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap()),
                },
            },
            "1",
            serde_json::json!({"type": "RestoreRequested", "data": {"restore": {"backup_id": id,
                "source_instance_id": id, "location": "acme/x/orders/base/20261201T013000",
                "target_time": "2026-11-30T00:53:20Z"}}}),
        ),
        (
            InstanceEvent::CredentialsRotationRequested {},
            "1",
            serde_json::json!({"type": "CredentialsRotationRequested", "data": {}}),
        ),
        (
            InstanceEvent::DeprovisioningStarted {},
            "1",
            serde_json::json!({"type": "DeprovisioningStarted", "data": {}}),
        ),
        (
            InstanceEvent::MaintenanceWindowChanged {
                window: crate::instance::maintenance::MaintenanceWindow {
                    day: crate::instance::maintenance::Weekday::Tuesday,
                    start: "03:30".into(),
                    duration_minutes: 120,
                    time_zone: "Europe/Berlin".into(),
                },
            },
            "1",
            serde_json::json!({"type": "MaintenanceWindowChanged", "data": {"window": {"day": "tuesday",
                "start": "03:30", "duration_minutes": 120, "time_zone": "Europe/Berlin"}}}),
        ),
        (
            InstanceEvent::PendingMaintenanceChanged {
                pending: crate::instance::maintenance::PendingMaintenance {
                    configuration: Some(crate::instance::maintenance::PendingConfiguration {
                        config: config([("max_connections", ConfigValue::Int(300))]),
                        parameters: vec!["max_connections".into()],
                    }),
                    version: None,
                },
            },
            "1",
            serde_json::json!({"type": "PendingMaintenanceChanged", "data": {"pending": {"configuration":
                {"config": {"max_connections": 300}, "parameters": ["max_connections"]}}}}),
        ),
        (
            InstanceEvent::PendingMaintenanceChanged {
                pending: crate::instance::maintenance::PendingMaintenance {
                    configuration: None,
                    version: Some(crate::instance::maintenance::PendingVersion {
                        from: "2.6".into(),
                        to: "2.7".into(),
                        rollout: Uuid::from_u128(0x42),
                    }),
                },
            },
            "1",
            serde_json::json!({"type": "PendingMaintenanceChanged", "data": {"pending": {"version":
                {"from": "2.6", "to": "2.7", "rollout": "00000000-0000-0000-0000-000000000042"}}}}),
        ),
        (
            InstanceEvent::PendingMaintenanceChanged {
                pending: crate::instance::maintenance::PendingMaintenance::default(),
            },
            "1",
            serde_json::json!({"type": "PendingMaintenanceChanged", "data": {"pending": {}}}),
        ),
        (
            InstanceEvent::MaintenanceApplied {
                trigger: crate::instance::maintenance::MaintenanceTrigger::Window,
            },
            "1",
            serde_json::json!({"type": "MaintenanceApplied", "data": {"trigger": "window"}}),
        ),
        (
            InstanceEvent::MaintenanceApplied {
                trigger: crate::instance::maintenance::MaintenanceTrigger::Customer,
            },
            "1",
            serde_json::json!({"type": "MaintenanceApplied", "data": {"trigger": "customer"}}),
        ),
        (
            InstanceEvent::UserCreated { name: "reporting".into(), role: "readonly".into() },
            "1",
            serde_json::json!({"type": "UserCreated", "data": {"name": "reporting", "role": "readonly"}}),
        ),
        (
            InstanceEvent::UserDeleted { name: "reporting".into() },
            "1",
            serde_json::json!({"type": "UserDeleted", "data": {"name": "reporting"}}),
        ),
        (
            InstanceEvent::UserPasswordRotationRequested { name: "reporting".into() },
            "1",
            serde_json::json!({"type": "UserPasswordRotationRequested", "data": {"name": "reporting"}}),
        ),
        (
            InstanceEvent::MigrationStarted {
                migration_id: id,
                from: "eu-1".into(),
                to: "eu-2".into(),
                backup_id: id,
            },
            "1",
            serde_json::json!({"type": "MigrationStarted", "data": {
                "migration_id": id, "from": "eu-1", "to": "eu-2", "backup_id": id}}),
        ),
        (
            InstanceEvent::MigrationTargetPlaced {
                migration_id: id,
                restore: crate::instance::restore::RestoreSpec {
                    backup_id: id,
                    source_instance_id: id,
                    location: "acme/x/db/base/20261206T000000".into(),
                    target_time: None,
                },
                archive_server: Some("db-m00000000".into()),
            },
            "1",
            serde_json::json!({"type": "MigrationTargetPlaced", "data": {
                "migration_id": id,
                "restore": {"backup_id": id, "source_instance_id": id, "location": "acme/x/db/base/20261206T000000"},
                "archive_server": "db-m00000000"}}),
        ),
        (
            InstanceEvent::MigrationCompleted { migration_id: id, from: "eu-1".into(), to: "eu-2".into() },
            "1",
            serde_json::json!({"type": "MigrationCompleted", "data": {"migration_id": id, "from": "eu-1", "to": "eu-2"}}),
        ),
        (
            InstanceEvent::MigrationFailed {
                migration_id: id,
                from: "eu-1".into(),
                to: "eu-2".into(),
                reason: "the copy failed".into(),
                target_placed: true,
            },
            "1",
            serde_json::json!({"type": "MigrationFailed", "data": {
                "migration_id": id, "from": "eu-1", "to": "eu-2", "reason": "the copy failed", "target_placed": true}}),
        ),
    ];
    for (event, schema, wire) in cases {
        let name = wire["type"].as_str().unwrap().to_owned();
        assert_eq!(event.type_name(), name);
        assert_eq!(cqrs_es::DomainEvent::event_type(&event), name);
        assert_eq!(cqrs_es::DomainEvent::event_version(&event), schema, "{name}");
        assert_eq!(serde_json::to_value(&event).unwrap(), wire, "{name}");
        assert_eq!(serde_json::from_value::<InstanceEvent>(wire).unwrap(), event, "{name}");
    }
}

//! Events: facts about an instance, named in the past tense. They are a wire format: each variant's
//! `event_type` and `event_version` are frozen, and a change of payload gets a new version and an
//! upcaster from the old one (`upcasters.rs`), so a stream holding old events still reads.
//!
//! Events are "fat": they carry the resulting state of what they change (the plan's resources, the
//! whole configuration), so readers never recompute it from the catalog.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AclEntry;
use crate::catalog::{Config, Resources, ServiceType};

/// Every event of the Instance aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum InstanceEvent {
    /// the instance was created
    InstanceProvisioned(InstanceProvisioned),
    /// the service version was raised
    VersionUpgraded {
        /// previous version
        from: String,
        /// new version
        to: String,
    },
    /// the plan changed; carries the resulting resources and storage
    PlanChanged {
        /// previous plan
        from: String,
        /// new plan
        to: String,
        /// resources of the new plan
        resources: Resources,
        /// storage after the change (never less than before)
        storage_gib: u32,
    },
    /// storage grew
    StorageExpanded {
        /// previous size
        from_gib: u32,
        /// new size
        to_gib: u32,
    },
    /// configuration changed; carries the whole resulting configuration (schema 3; schema 1 had no
    /// `changed`, schema 2 no `restart`)
    ConfigurationChanged {
        /// configuration after the change
        config: Config,
        /// the parameters the change set, changed or removed, sorted: what a reader must apply. Events of
        /// schema 1 are read with every parameter of `config` here.
        changed: Vec<String>,
        /// those of `changed` that take a restart of the service to apply (the catalog's `restart` mode),
        /// sorted. Events of schema 1 and 2 are read with all of `changed` here.
        restart: Vec<String>,
    },
    /// the network ACL changed; carries the whole resulting set, sorted by CIDR
    NetworkAccessChanged {
        /// the allowed source blocks after the change
        entries: Vec<AclEntry>,
    },
    /// the description changed
    DescriptionChanged {
        /// new description
        description: String,
    },
    /// deletion protection was switched on or off
    DeletionProtectionChanged {
        /// whether protection is on
        enabled: bool,
    },
    /// the backup schedules changed; carries the whole resulting set, sorted by name
    BackupSchedulesChanged {
        /// every schedule after the change
        schedules: Vec<super::schedules::BackupSchedule>,
    },
    /// a backup is to be loaded into the instance (the restore aspect changes)
    RestoreRequested {
        /// which, and where its object is
        restore: super::restore::RestoreSpec,
    },
    /// a new password was asked for. Records the request only: the password is made and kept in the
    /// cluster, never in an event
    CredentialsRotationRequested {},
    /// deprovisioning began; from now on only Deprovision is accepted
    DeprovisioningStarted {},
    /// a user was created (the users aspect changes). No password: the cluster makes it and keeps it
    UserCreated {
        /// its name
        name: String,
        /// its role, from the service's catalog
        role: String,
    },
    /// a user was deleted: the engine is to revoke it (the users aspect changes)
    UserDeleted {
        /// its name
        name: String,
    },
    /// a new password was asked for a user. Records the request only: the password is made and kept in
    /// the cluster, never in an event
    UserPasswordRotationRequested {
        /// its name
        name: String,
    },
    /// the weekly maintenance window changed; carries the whole resulting window
    MaintenanceWindowChanged {
        /// the window after the change
        window: super::maintenance::MaintenanceWindow,
    },
    /// what is held for the maintenance window changed; carries the whole resulting set (empty: nothing
    /// held). Changes nothing in the cluster
    PendingMaintenanceChanged {
        /// what is held after the change
        pending: super::maintenance::PendingMaintenance,
    },
    /// what was held for the maintenance window is being applied (the events that apply it follow in the
    /// same message, e.g. `ConfigurationChanged`); nothing is held afterwards
    MaintenanceApplied {
        /// the window opened, or the customer asked
        trigger: super::maintenance::MaintenanceTrigger,
    },
    /// a move to another cluster began; the instance keeps serving where it is until it completes
    MigrationStarted {
        /// the move's id
        migration_id: Uuid,
        /// the cluster it serves on
        from: String,
        /// the cluster it moves to
        to: String,
        /// the backup the copy on `to` is restored from
        backup_id: Uuid,
    },
    /// the copy on the target cluster was placed, restored from the move's backup (published on the
    /// target's subject, see `migration.rs`)
    MigrationTargetPlaced {
        /// the move's id
        migration_id: Uuid,
        /// what the copy is restored from
        restore: super::restore::RestoreSpec,
        /// PostgreSQL: the server name the copy archives under
        #[serde(default, skip_serializing_if = "Option::is_none")]
        archive_server: Option<String>,
    },
    /// the copy serves: the instance now lives on `to`, and `from` removes its objects (published on the
    /// source's subject)
    MigrationCompleted {
        /// the move's id
        migration_id: Uuid,
        /// where it served
        from: String,
        /// where it serves now
        to: String,
    },
    /// the move was given up: the instance keeps serving on `from`, and a placed copy is removed
    /// (published on the target's subject once one was placed)
    MigrationFailed {
        /// the move's id
        migration_id: Uuid,
        /// where it keeps serving
        from: String,
        /// where it was going
        to: String,
        /// why
        reason: String,
        /// whether a copy had been placed on `to`
        target_placed: bool,
    },
}

/// Payload of [`InstanceEvent::InstanceProvisioned`]: the whole desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceProvisioned {
    /// instance id
    pub instance_id: Uuid,
    /// owning project
    pub project: String,
    /// name
    pub name: String,
    /// service type
    pub service: ServiceType,
    /// service version
    pub version: String,
    /// plan name
    pub plan: String,
    /// resources of the plan
    pub resources: Resources,
    /// storage in GiB
    pub storage_gib: u32,
    /// configuration
    pub config: Config,
    /// description
    pub description: String,
    /// deletion protection
    pub deletion_protection: bool,
    /// cluster the instance is placed on
    pub cluster: String,
}

impl InstanceEvent {
    /// The frozen type name, as stored in headers and payloads.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InstanceProvisioned(_) => "InstanceProvisioned",
            Self::VersionUpgraded { .. } => "VersionUpgraded",
            Self::PlanChanged { .. } => "PlanChanged",
            Self::StorageExpanded { .. } => "StorageExpanded",
            Self::ConfigurationChanged { .. } => "ConfigurationChanged",
            Self::NetworkAccessChanged { .. } => "NetworkAccessChanged",
            Self::DescriptionChanged { .. } => "DescriptionChanged",
            Self::DeletionProtectionChanged { .. } => "DeletionProtectionChanged",
            Self::CredentialsRotationRequested {} => "CredentialsRotationRequested",
            Self::BackupSchedulesChanged { .. } => "BackupSchedulesChanged",
            Self::RestoreRequested { .. } => "RestoreRequested",
            Self::DeprovisioningStarted {} => "DeprovisioningStarted",
            Self::MaintenanceWindowChanged { .. } => "MaintenanceWindowChanged",
            Self::PendingMaintenanceChanged { .. } => "PendingMaintenanceChanged",
            Self::MaintenanceApplied { .. } => "MaintenanceApplied",
            Self::UserCreated { .. } => "UserCreated",
            Self::UserDeleted { .. } => "UserDeleted",
            Self::UserPasswordRotationRequested { .. } => "UserPasswordRotationRequested",
            Self::MigrationStarted { .. } => "MigrationStarted",
            Self::MigrationTargetPlaced { .. } => "MigrationTargetPlaced",
            Self::MigrationCompleted { .. } => "MigrationCompleted",
            Self::MigrationFailed { .. } => "MigrationFailed",
        }
    }

    /// The schema version of the payload this build writes, frozen per variant; raised with each payload
    /// change, beside an upcaster from the previous one.
    pub fn schema(&self) -> &'static str {
        match self {
            Self::ConfigurationChanged { .. } => "3",
            Self::InstanceProvisioned(_)
            | Self::VersionUpgraded { .. }
            | Self::PlanChanged { .. }
            | Self::StorageExpanded { .. }
            | Self::NetworkAccessChanged { .. }
            | Self::DescriptionChanged { .. }
            | Self::DeletionProtectionChanged { .. }
            | Self::CredentialsRotationRequested {}
            | Self::BackupSchedulesChanged { .. }
            | Self::RestoreRequested { .. }
            | Self::DeprovisioningStarted {}
            | Self::MaintenanceWindowChanged { .. }
            | Self::PendingMaintenanceChanged { .. }
            | Self::MaintenanceApplied { .. }
            | Self::UserCreated { .. }
            | Self::UserDeleted { .. }
            | Self::UserPasswordRotationRequested { .. }
            | Self::MigrationStarted { .. }
            | Self::MigrationTargetPlaced { .. }
            | Self::MigrationCompleted { .. }
            | Self::MigrationFailed { .. } => "1",
        }
    }
}

impl DomainEvent for InstanceEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        self.schema().to_owned()
    }
}

//! Commands: what a client asks of an instance. Imperative names; checked by the aggregate.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::AclEntry;
use crate::catalog::{Config, ConfigValue, ServiceType};

/// Every command the Instance aggregate accepts.
// A command lives for one request; boxing the provision would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceCommand {
    /// create the instance
    Provision(ProvisionInstance),
    /// change version, plan, storage, configuration, description or deletion protection
    Update(UpdateInstance),
    /// replace the whole network ACL (a set: order does not matter)
    ReplaceAcl {
        /// the entries
        entries: Vec<AclEntry>,
        /// whether `0.0.0.0/0` and `::/0` may be among them
        allow_public: bool,
    },
    /// add one ACL entry (or change the description of the entry with its CIDR)
    AddAclEntry {
        /// the entry
        entry: AclEntry,
        /// whether it may be `0.0.0.0/0` or `::/0`
        allow_public: bool,
    },
    /// remove the ACL entry with this CIDR
    RemoveAclEntry {
        /// the entry's CIDR
        cidr: String,
    },
    /// replace the service's generated password with a new one
    RotateCredentials,
    /// load a backup into the instance, replacing its data
    Restore(super::restore::RestoreSource),
    /// add a backup schedule, or replace the one with its id
    PutBackupSchedule(super::schedules::BackupSchedule),
    /// remove a backup schedule
    RemoveBackupSchedule {
        /// its id
        id: Uuid,
    },
    /// apply what is held for the maintenance window now
    ApplyMaintenance {
        /// the window opened, or the customer asked
        trigger: super::maintenance::MaintenanceTrigger,
    },
    /// hold a version upgrade the platform rolls out for the maintenance window (an admin's rollout;
    /// `maintenance::check_rollout`): applied by `ApplyMaintenance`
    HoldVersionUpgrade {
        /// the version to run
        to: String,
        /// the rollout asking for it
        rollout: Uuid,
    },
    /// create a user with a role from the service's catalog (`users::user_roles`); its password is made
    /// in the cluster
    CreateUser {
        /// its name (`users::check_name`)
        name: String,
        /// its role
        role: String,
    },
    /// delete a user: the engine revokes it
    DeleteUser {
        /// its name
        name: String,
    },
    /// give a user a new password (made in the cluster; the old one works until the new one is applied)
    RotateUserPassword {
        /// its name
        name: String,
    },
    /// start removing the instance (and its users)
    Deprovision,
    /// begin moving the instance to another cluster of its region (`migration.rs`)
    StartMigration {
        /// the move's id
        migration_id: Uuid,
        /// the cluster it moves to (the caller checked it is registered, of the instance's region and
        /// not cordoned)
        to: String,
        /// the backup the copy is to be restored from (asked for by the caller under this id)
        backup_id: Uuid,
    },
    /// place the copy on the target, restored from the move's backup
    PlaceMigrationTarget {
        /// the move's id
        migration_id: Uuid,
        /// the move's backup, as the read side knows it
        source: super::restore::RestoreSource,
    },
    /// the copy serves: the instance lives on the target from now on
    CompleteMigration {
        /// the move's id
        migration_id: Uuid,
    },
    /// give the move up; the instance keeps serving where it was
    FailMigration {
        /// the move's id
        migration_id: Uuid,
        /// why
        reason: String,
    },
}

impl InstanceCommand {
    /// Whether the command is a step of a move (every other command waits until the move ended).
    pub fn is_migration_step(&self) -> bool {
        matches!(
            self,
            Self::StartMigration { .. }
                | Self::PlaceMigrationTarget { .. }
                | Self::CompleteMigration { .. }
                | Self::FailMigration { .. }
        )
    }
}

/// Create an instance. Its id is assigned by the caller (the API) so retries address the same aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionInstance {
    /// server-assigned id
    pub instance_id: Uuid,
    /// owning project (a DNS-1123 label)
    pub project: String,
    /// name, unique within the project (a DNS-1123 label)
    pub name: String,
    /// service type
    pub service: ServiceType,
    /// service version, from the catalog
    pub version: String,
    /// plan name, from the catalog
    pub plan: String,
    /// storage in GiB; the plan's when absent
    pub storage_gib: Option<u32>,
    /// service configuration
    pub config: Config,
    /// free text
    pub description: String,
    /// whether Deprovision is refused
    pub deletion_protection: bool,
    /// cluster the instance is placed on
    pub cluster: String,
    /// network ACL; empty: no access from outside the instance
    pub acl: Vec<AclEntry>,
    /// whether the ACL may hold `0.0.0.0/0` or `::/0`
    pub allow_public: bool,
    /// a backup to load into the new instance
    pub restore: Option<super::restore::RestoreSource>,
    /// the weekly maintenance window; the platform's default when absent
    pub maintenance_window: Option<super::maintenance::MaintenanceWindow>,
}

impl ProvisionInstance {
    /// A provision with the plan's storage, no configuration, no description, no deletion protection and an
    /// empty ACL; set the other fields afterwards where needed.
    pub fn new(
        instance_id: Uuid,
        project: impl Into<String>,
        name: impl Into<String>,
        service: ServiceType,
        version: impl Into<String>,
        plan: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Self {
        Self {
            instance_id,
            project: project.into(),
            name: name.into(),
            service,
            version: version.into(),
            plan: plan.into(),
            storage_gib: None,
            config: Config::new(),
            description: String::new(),
            deletion_protection: false,
            cluster: cluster.into(),
            acl: Vec::new(),
            allow_public: false,
            restore: None,
            maintenance_window: None,
        }
    }
}

/// Change an instance. Absent fields are left as they are; `config` is merged (a `None` value removes a
/// key), so applying the same update twice changes nothing the second time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateInstance {
    /// new version (upgrade only)
    pub version: Option<String>,
    /// new plan
    pub plan: Option<String>,
    /// new storage in GiB (grow only)
    pub storage_gib: Option<u32>,
    /// configuration changes: `Some` sets, `None` removes
    pub config: Option<BTreeMap<String, Option<ConfigValue>>>,
    /// new description
    pub description: Option<String>,
    /// new deletion protection
    pub deletion_protection: Option<bool>,
    /// new maintenance window
    pub maintenance_window: Option<super::maintenance::MaintenanceWindow>,
    /// when the change is asked. A configuration change needing a restart asked while the maintenance
    /// window is closed at this time is held for the window; `None` applies it at once (callers that
    /// have no clock, such as tests of other rules)
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

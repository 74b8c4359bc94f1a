//! Aspects: the parts of an instance that are changed, applied and reported separately, each with its
//! own generation, so a change completes when *its* aspect is applied (an ACL change does not wait
//! behind a version upgrade rolling pods).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::InstanceEvent;

/// A part of an instance tracked on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// service version
    Version,
    /// plan: resources, replicas, storage
    Resources,
    /// configuration parameters
    Configuration,
    /// who may connect: the ACL and the endpoint
    NetworkAccess,
    /// the service's generated password: changed by a rotation, applied once the service accepts only
    /// the new one
    Credentials,
    /// the data: a restore from a backup replaces it
    Restore,
    /// the per-application users: created, deleted, or given a new password
    Users,
    /// deprovisioning (tracked by the read side only; never applied to the cluster as a generation)
    Deletion,
}

/// The aspects a cluster applies, each with a generation.
pub const APPLIED_ASPECTS: [Aspect; 7] = [
    Aspect::Version,
    Aspect::Resources,
    Aspect::Configuration,
    Aspect::NetworkAccess,
    Aspect::Credentials,
    Aspect::Restore,
    Aspect::Users,
];

/// The aspects provisioning sets. Credentials are made with the instance and count as changed only by a
/// rotation (generation 0 until then: nothing to apply).
pub const PROVISIONED_ASPECTS: [Aspect; 4] =
    [Aspect::Version, Aspect::Resources, Aspect::Configuration, Aspect::NetworkAccess];

impl Aspect {
    /// Condition type of the aspect.
    pub fn condition_type(self) -> &'static str {
        match self {
            Self::Version => "VersionApplied",
            Self::Resources => "ResourcesApplied",
            Self::Configuration => "ConfigurationApplied",
            Self::NetworkAccess => "NetworkAccessApplied",
            Self::Credentials => "CredentialsApplied",
            Self::Restore => "RestoreApplied",
            Self::Users => "UsersApplied",
            Self::Deletion => "Deleted",
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Version => "version",
            Self::Resources => "resources",
            Self::Configuration => "configuration",
            Self::NetworkAccess => "network_access",
            Self::Credentials => "credentials",
            Self::Restore => "restore",
            Self::Users => "users",
            Self::Deletion => "deletion",
        }
    }
}

/// Per applied aspect, the instance version (generation) that last changed it. 0: never changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generations {
    /// service version
    pub version: u64,
    /// resources and storage
    pub resources: u64,
    /// configuration
    pub configuration: u64,
    /// ACL and endpoint
    pub network_access: u64,
    /// credentials (0 until the first rotation). Added with a default: snapshots and reports written
    /// before rotations existed read as never rotated.
    #[serde(default)]
    pub credentials: u64,
    /// restore (0 until the first restore). Added with a default, like `credentials`.
    #[serde(default)]
    pub restore: u64,
    /// users (0 until the first user is created). Added with a default, like `credentials`.
    #[serde(default)]
    pub users: u64,
}

impl Generations {
    /// Every provisioned aspect at `generation`: what a reader assumes when it cannot know which version
    /// changed which aspect (nothing is taken as applied before it is). Such a reader predates rotations,
    /// so credentials stay at 0.
    pub fn all(generation: u64) -> Self {
        Self {
            version: generation,
            resources: generation,
            configuration: generation,
            network_access: generation,
            credentials: 0,
            restore: 0,
            users: 0,
        }
    }

    /// The generation of an applied aspect; `None` for [`Aspect::Deletion`].
    pub fn get(&self, aspect: Aspect) -> Option<u64> {
        match aspect {
            Aspect::Version => Some(self.version),
            Aspect::Resources => Some(self.resources),
            Aspect::Configuration => Some(self.configuration),
            Aspect::NetworkAccess => Some(self.network_access),
            Aspect::Credentials => Some(self.credentials),
            Aspect::Restore => Some(self.restore),
            Aspect::Users => Some(self.users),
            Aspect::Deletion => None,
        }
    }

    /// Records that `aspect` changed at `generation`.
    pub fn set(&mut self, aspect: Aspect, generation: u64) {
        match aspect {
            Aspect::Version => self.version = generation,
            Aspect::Resources => self.resources = generation,
            Aspect::Configuration => self.configuration = generation,
            Aspect::NetworkAccess => self.network_access = generation,
            Aspect::Credentials => self.credentials = generation,
            Aspect::Restore => self.restore = generation,
            Aspect::Users => self.users = generation,
            Aspect::Deletion => {}
        }
    }
}

/// Each aspect `events` change, at the version of the last event that changes it; the events are one
/// command's, the first at `first_version` (an aggregate records an aspect's generation per event, and
/// agents report what they applied in those terms).
pub fn changed_aspects(events: &[InstanceEvent], first_version: u64) -> BTreeMap<Aspect, u64> {
    let mut changed = BTreeMap::new();
    for (version, event) in (first_version..).zip(events) {
        for aspect in event.aspects() {
            changed.insert(*aspect, version);
        }
    }
    changed
}

impl InstanceEvent {
    /// The aspects the event changes.
    pub fn aspects(&self) -> &'static [Aspect] {
        match self {
            Self::InstanceProvisioned(_) => &PROVISIONED_ASPECTS,
            Self::VersionUpgraded { .. } => &[Aspect::Version],
            Self::PlanChanged { .. } | Self::StorageExpanded { .. } => &[Aspect::Resources],
            Self::ConfigurationChanged { .. } => &[Aspect::Configuration],
            Self::NetworkAccessChanged { .. } => &[Aspect::NetworkAccess],
            Self::CredentialsRotationRequested {} => &[Aspect::Credentials],
            Self::RestoreRequested { .. } => &[Aspect::Restore],
            Self::UserCreated { .. }
            | Self::UserDeleted { .. }
            | Self::UserPasswordRotationRequested { .. } => &[Aspect::Users],
            Self::DeprovisioningStarted {} => &[Aspect::Deletion],
            // Schedules are the control plane's to run: nothing in the cluster changes.
            Self::DescriptionChanged { .. }
            | Self::DeletionProtectionChanged { .. }
            | Self::BackupSchedulesChanged { .. }
            // Held and released by the control plane; the events that apply it change the aspects.
            | Self::MaintenanceWindowChanged { .. }
            | Self::PendingMaintenanceChanged { .. }
            | Self::MaintenanceApplied { .. }
            // A move changes where the instance runs, not what runs: the target's copy is applied from
            // scratch, its restore generation is the placing version (`migration.rs`).
            | Self::MigrationStarted { .. }
            | Self::MigrationTargetPlaced { .. }
            | Self::MigrationCompleted { .. }
            | Self::MigrationFailed { .. } => &[],
        }
    }
}

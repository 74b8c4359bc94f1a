//! Observed-state events: what a cluster agent saw of an instance in its cluster. Facts from the
//! cluster, not decisions: no aggregate checks them. A wire format like the instance events: type names
//! and the schema version are frozen.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::instance::{Aspect, Generations};

/// Schema version of the payloads defined here.
pub const OBSERVED_EVENT_VERSION: &str = "1";

/// How an instance looks in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedPhase {
    /// objects are being created or rolled out
    Progressing,
    /// everything desired is applied and ready
    Ready,
    /// a workload fails (see `reason`)
    Failed,
}

/// The observed state of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    /// instance
    pub instance_id: Uuid,
    /// the desired generation (instance version) the cluster has fully applied and made ready, if any
    pub observed_generation: Option<u64>,
    /// the desired generation the agent was working towards
    pub desired_generation: u64,
    /// phase
    pub phase: ObservedPhase,
    /// replicas ready
    pub ready_replicas: u32,
    /// replicas desired
    pub desired_replicas: u32,
    /// service version running, once a rollout completed
    pub running_version: Option<String>,
    /// hash of the configuration applied, once a rollout completed
    pub config_hash: Option<String>,
    /// the configuration applied (the one `config_hash` describes). Added to schema 1 with a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// why it fails, when it does
    pub reason: Option<String>,
    /// per applied aspect, the generation of it the cluster has applied (0: none yet). Added to schema 1
    /// with a default: a report without it reads with every aspect at `observed_generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Generations>,
    /// network access as the cluster enforces it. Added to schema 1 with a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ObservedNetwork>,
    /// once `observed_generation` is the desired one: each object the agent applied for it (`Kind/name`,
    /// Secrets excluded) with the SHA-256 of its rendered form, so a dry run of another renderer can name
    /// the objects it would change. Added to schema 1 with a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<std::collections::BTreeMap<String, String>>,
    /// each user of the instance as the engine reports it, sorted by name. Added to schema 1 with a
    /// default: a report without it says nothing of users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<ObservedUser>>,
}

/// One user of an instance as its engine reports it (no password: that never leaves the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedUser {
    /// its name
    pub name: String,
    /// the generation of the user (the instance version of its creation or last password rotation) the
    /// engine has applied; 0: not yet
    pub generation: u64,
    /// why the engine cannot apply it, when it says so (CloudNativePG's `cannotReconcile`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ObservedState {
    /// The generation of `aspect` the cluster has applied (0: none yet).
    pub fn applied(&self, aspect: Aspect) -> u64 {
        let all = self.observed_generation.unwrap_or(0);
        self.applied.map_or(all, |applied| applied.get(aspect).unwrap_or(all))
    }
}

/// Network access as a cluster enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNetwork {
    /// the source blocks the instance's NetworkPolicy admits, sorted
    pub acl: Vec<String>,
    /// where clients connect, once the cluster has assigned an address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

/// A reachable address of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address or host name
    pub host: String,
    /// TCP port
    pub port: u16,
}

/// Every observed-state event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ObservedEvent {
    /// the observed state changed
    InstanceObserved(Box<ObservedState>),
    /// objects edited outside the control plane were put back
    DriftHealed {
        /// instance
        instance_id: Uuid,
        /// the objects that had drifted (`Kind/name`)
        objects: Vec<String>,
        /// for each edited object, the first field found changed (added to schema `1`; absent for a
        /// deleted object, and in older reports)
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fields: Vec<DriftedField>,
    },
    /// every object of a deprovisioned instance is gone from the cluster
    InstanceRemoved {
        /// instance
        instance_id: Uuid,
    },
    /// the cluster began a backup
    BackupStarted {
        /// the backup
        backup_id: Uuid,
    },
    /// a backup's artifact is in the object store
    BackupCompleted {
        /// the backup
        backup_id: Uuid,
        /// where: the object's key in the backup bucket; for a backup of many objects (a PostgreSQL base
        /// backup), the prefix they lie under
        location: String,
        /// its size in bytes (of many objects: their total)
        size_bytes: u64,
        /// the SHA-256 of its content, hex; absent for a backup of many objects
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// how long the backup took, in milliseconds
        duration_ms: u64,
    },
    /// a backup failed; nothing usable is in the store
    BackupFailed {
        /// the backup
        backup_id: Uuid,
        /// why, as the cluster reports it
        reason: String,
    },
    /// the control plane checked a completed backup's object in the store against what the cluster
    /// reported
    BackupVerified {
        /// the backup
        backup_id: Uuid,
        /// whether the object is there with the reported size and checksum
        matches: bool,
        /// what was found, when it does not match
        detail: Option<String>,
    },
    /// a backup's artifact was deleted from the object store (asked for, or its retention ended)
    BackupDeleted {
        /// the backup
        backup_id: Uuid,
    },
}

/// A field of a cluster object that someone changed outside the control plane, as the agent found it
/// before putting it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftedField {
    /// the object (`Kind/name`)
    pub object: String,
    /// JSON pointer of the field
    pub path: String,
    /// what the control plane wants there
    pub desired: serde_json::Value,
    /// what was there (null: nothing); a Secret's values are never reported
    pub found: serde_json::Value,
}

impl ObservedEvent {
    /// The backup a fact is about, for the facts about backups.
    pub fn backup_id(&self) -> Option<Uuid> {
        match self {
            Self::BackupStarted { backup_id }
            | Self::BackupCompleted { backup_id, .. }
            | Self::BackupFailed { backup_id, .. }
            | Self::BackupVerified { backup_id, .. }
            | Self::BackupDeleted { backup_id } => Some(*backup_id),
            Self::InstanceObserved(_) | Self::DriftHealed { .. } | Self::InstanceRemoved { .. } => None,
        }
    }

    /// Whether only the control plane may state this fact: it checked or deleted a backup's object in the
    /// store, which no cluster can see or do. A cluster stating it is refused.
    pub fn stated_by_control_plane(&self) -> bool {
        matches!(self, Self::BackupVerified { .. } | Self::BackupDeleted { .. })
    }

    /// The instance a fact names inside its payload, for the facts that name one (the projector checks it
    /// against the message's subject).
    pub fn named_instance(&self) -> Option<Uuid> {
        match self {
            Self::DriftHealed { instance_id, .. } | Self::InstanceRemoved { instance_id } => {
                Some(*instance_id)
            }
            Self::InstanceObserved(state) => Some(state.instance_id),
            Self::BackupStarted { .. }
            | Self::BackupCompleted { .. }
            | Self::BackupFailed { .. }
            | Self::BackupVerified { .. }
            | Self::BackupDeleted { .. } => None,
        }
    }

    /// The frozen type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InstanceObserved(_) => "InstanceObserved",
            Self::DriftHealed { .. } => "DriftHealed",
            Self::InstanceRemoved { .. } => "InstanceRemoved",
            Self::BackupStarted { .. } => "BackupStarted",
            Self::BackupCompleted { .. } => "BackupCompleted",
            Self::BackupFailed { .. } => "BackupFailed",
            Self::BackupVerified { .. } => "BackupVerified",
            Self::BackupDeleted { .. } => "BackupDeleted",
        }
    }
}

/// Hash of a configuration as agents report it (`config_hash`): the first 8 bytes of the SHA-256 of its
/// canonical JSON (keys sorted, as `BTreeMap` serializes them), hex encoded.
pub fn config_hash<T: Serialize>(config: &std::collections::BTreeMap<String, T>) -> String {
    use sha2::Digest as _;
    let canonical = serde_json::to_vec(config).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&canonical)[..8])
}

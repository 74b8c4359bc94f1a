//! The Backup aggregate: one per backup, on a subject of its own under its instance's
//! (`cp.evt.<cluster>.<project>.<instance-id>.bak.<backup-id>`), so a request outlives its instance and
//! an agent finds every pending one from the last message of each subject. Commands, events, rules and
//! given/when/then tests side by side, like the Instance aggregate's.
//!
//! What happens to a backup in the cluster (started, completed with its size and checksum, failed, expired)
//! are facts its cluster's agent reports as observed events (`crate::observed`); this aggregate holds the
//! decisions: that a backup was asked for, of what, and that it should be deleted.

use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Lifecycle, ServiceType};

mod location;
pub use location::{LocationError, check_location};

/// The key of a backup's object in the backup bucket: `<project>/<instance-id>/<backup-id>`, so an
/// instance's backups list under one prefix and outlive it. One format for the agents that write the
/// objects and the control plane that checks and deletes them.
pub fn object_key(project: &str, instance_id: Uuid, backup_id: Uuid) -> String {
    format!("{project}/{instance_id}/{backup_id}")
}

/// What started a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackupTrigger {
    /// asked for through the API
    Manual,
    /// made by a backup schedule
    Schedule {
        /// the schedule
        schedule_id: Uuid,
    },
    /// made for a move to another cluster: the copy there is restored from it
    Migration {
        /// the move
        migration_id: Uuid,
    },
}

/// The instance a backup is of, as it was when the backup was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSource {
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// the instance's name (what the cluster's objects are named after)
    pub instance_name: String,
    /// the cluster the instance runs on (and the backup is made on)
    pub cluster: String,
    /// service type
    pub service: ServiceType,
    /// service version the backup is of
    pub version: String,
}

impl BackupSource {
    /// A backup of the instance `spec` describes, as it is now.
    pub fn of(spec: &crate::instance::InstanceSpec) -> Self {
        Self {
            project: spec.project.clone(),
            instance_id: spec.id,
            instance_name: spec.name.clone(),
            cluster: spec.cluster.clone(),
            service: spec.service,
            version: spec.version.clone(),
        }
    }
}

/// What the caller knows of the instance when it asks for a backup: the rules need it, and it comes from
/// the instance's aggregate and its observed state, which this aggregate does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceFacts {
    /// where the instance is in its life
    pub lifecycle: Lifecycle,
    /// whether its cluster ever reported it ready
    pub ever_ready: bool,
}

/// Every command the Backup aggregate accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupCommand {
    /// ask for a backup
    Request {
        /// of what
        source: BackupSource,
        /// why
        trigger: BackupTrigger,
        /// the instance as the caller sees it
        instance: InstanceFacts,
    },
    /// delete the backup's object from the store; the record stays, marked deleted
    Delete {
        /// whether the backup has ended (completed or failed), as the read side knows it: a backup whose
        /// artifact may still be uploading cannot be deleted yet
        ended: bool,
    },
}

/// Every event of a backup. Past tense; names and schemas are frozen (see the tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BackupEvent {
    /// a backup was asked for; carries what it is of
    BackupRequested {
        /// of what
        source: BackupSource,
        /// why
        trigger: BackupTrigger,
    },
    /// the backup's deletion was asked for
    BackupDeletionRequested {},
}

impl BackupEvent {
    /// The frozen type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::BackupRequested { .. } => "BackupRequested",
            Self::BackupDeletionRequested {} => "BackupDeletionRequested",
        }
    }
}

impl DomainEvent for BackupEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Why a backup command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// the instance's cluster never reported it ready: there is nothing to back up yet
    #[error("the instance was never ready yet; there is nothing to back up")]
    InstanceNotReady,
    /// the instance is being deprovisioned
    #[error("the instance is being deprovisioned; no new backup is taken")]
    InstanceDeprovisioning,
    /// the instance does not exist
    #[error("instance not found")]
    InstanceNotFound,
    /// a request of this backup id with another source exists
    #[error("a backup with this id exists")]
    AlreadyExists,
    /// the backup does not exist
    #[error("backup not found")]
    NotFound,
    /// the backup is still being made
    #[error("the backup is still being made; delete it once it has ended")]
    StillRunning,
}

/// The Backup aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    source: Option<BackupSource>,
    trigger: Option<BackupTrigger>,
    deletion_requested: bool,
}

impl Backup {
    /// What the backup is of; `None` before it was requested.
    pub fn source(&self) -> Option<&BackupSource> {
        self.source.as_ref()
    }

    /// What started it.
    pub fn trigger(&self) -> Option<&BackupTrigger> {
        self.trigger.as_ref()
    }

    /// Whether its deletion was asked for.
    pub fn deletion_requested(&self) -> bool {
        self.deletion_requested
    }

    fn request(
        &self,
        source: BackupSource,
        trigger: BackupTrigger,
        instance: InstanceFacts,
    ) -> Result<Vec<BackupEvent>, BackupError> {
        if let Some(existing) = &self.source {
            // A retry of the same request changes nothing; another request under the same id is refused.
            return if *existing == source && self.trigger.as_ref() == Some(&trigger) {
                Ok(vec![])
            } else {
                Err(BackupError::AlreadyExists)
            };
        }
        match instance.lifecycle {
            Lifecycle::Absent => Err(BackupError::InstanceNotFound),
            Lifecycle::Deprovisioning => Err(BackupError::InstanceDeprovisioning),
            Lifecycle::Active if !instance.ever_ready => Err(BackupError::InstanceNotReady),
            Lifecycle::Active => Ok(vec![BackupEvent::BackupRequested { source, trigger }]),
        }
    }

    fn delete(&self, ended: bool) -> Result<Vec<BackupEvent>, BackupError> {
        match (&self.source, self.deletion_requested) {
            (None, _) => Err(BackupError::NotFound),
            (Some(_), true) => Ok(vec![]),
            (Some(_), false) if !ended => Err(BackupError::StillRunning),
            (Some(_), false) => Ok(vec![BackupEvent::BackupDeletionRequested {}]),
        }
    }
}

impl Aggregate for Backup {
    const TYPE: &'static str = "backup";
    type Command = BackupCommand;
    type Event = BackupEvent;
    type Error = BackupError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BackupCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), BackupError> {
        let events = match command {
            BackupCommand::Request { source, trigger, instance } => {
                self.request(source, trigger, instance)?
            }
            BackupCommand::Delete { ended } => self.delete(ended)?,
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: BackupEvent) {
        match event {
            BackupEvent::BackupRequested { source, trigger } => {
                self.source = Some(source);
                self.trigger = Some(trigger);
            }
            BackupEvent::BackupDeletionRequested {} => self.deletion_requested = true,
        }
    }
}

#[cfg(test)]
mod tests;

//! Backup views: one record per backup, from its own events (what was asked) and its cluster's facts
//! (started, completed with size and checksum, failed, deleted). Kept after the instance is deprovisioned:
//! backups outlive their instance.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::{Backup, BackupEvent, BackupSource, BackupTrigger, observed::ObservedEvent};
use serde::{Deserialize, Serialize};
use streams::{
    EventBatch,
    backups::parse_aggregate_id,
    observed::{ObservedMessage, ObservedSubject},
    read_models::RecordKey,
};
use uuid::Uuid;

use crate::{facts::FactRefused, instances::ApplyError};

/// Where a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// asked for; its cluster has not started it
    Requested,
    /// its cluster is making it
    Running,
    /// its artifact is in the object store
    Completed,
    /// it failed; nothing usable is in the store
    Failed,
    /// its deletion was asked for; the artifact may still be in the store
    Deleting,
    /// its artifact is gone from the store
    Deleted,
}

/// One backup as the read side shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    /// backup id (also the id of the operation that asked for it)
    pub id: Uuid,
    /// what it is of
    pub source: BackupSource,
    /// what started it
    pub trigger: BackupTrigger,
    /// where it is
    pub state: BackupState,
    /// when it was asked for
    pub requested_at: DateTime<Utc>,
    /// when its cluster started it
    pub started_at: Option<DateTime<Utc>>,
    /// when it completed or failed
    pub finished_at: Option<DateTime<Utc>>,
    /// the artifact's key in the backup bucket
    pub location: Option<String>,
    /// the artifact's size
    pub size_bytes: Option<u64>,
    /// the artifact's SHA-256, hex
    pub sha256: Option<String>,
    /// how long the backup took
    pub duration_ms: Option<u64>,
    /// why it failed
    pub reason: Option<String>,
    /// whether the control plane found the object in the store as reported (`None`: not checked yet)
    #[serde(default)]
    pub verified: Option<bool>,
    /// what the check found, when the object is not as reported
    #[serde(default)]
    pub verification_detail: Option<String>,
    /// the command id of the deletion, once asked for
    pub deletion_operation: Option<Uuid>,
    /// last stream sequence folded into this record
    pub sequence: u64,
}

/// Every backup, by (project, backup id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backups {
    views: BTreeMap<(String, Uuid), BackupView>,
    /// records changed since the last take
    changed: BTreeSet<RecordKey>,
}

impl Backups {
    /// Folds one message of a backup's subject. `Ok(false)` when it was folded before.
    pub(crate) fn apply_batch(&mut self, sequence: u64, batch: &EventBatch) -> Result<bool, ApplyError> {
        let events = batch.decode_events::<Backup>()?;
        let (project, _, backup_id) = parse_aggregate_id(&batch.aggregate_id)
            .ok_or_else(|| ApplyError::AggregateId(batch.aggregate_id.clone()))?;
        let key = (project.clone(), backup_id);
        if self.views.get(&key).is_some_and(|v| v.sequence >= sequence) {
            return Ok(false);
        }
        for event in events {
            match event {
                BackupEvent::BackupRequested { source, trigger } => {
                    self.views.entry(key.clone()).or_insert_with(|| BackupView {
                        id: backup_id,
                        source,
                        trigger,
                        state: BackupState::Requested,
                        requested_at: batch.metadata.time,
                        started_at: None,
                        finished_at: None,
                        location: None,
                        size_bytes: None,
                        sha256: None,
                        duration_ms: None,
                        reason: None,
                        verified: None,
                        verification_detail: None,
                        deletion_operation: None,
                        sequence,
                    });
                }
                BackupEvent::BackupDeletionRequested {} => {
                    if let Some(view) = self.views.get_mut(&key) {
                        view.deletion_operation = Some(batch.metadata.command_id);
                        if view.state != BackupState::Deleted {
                            view.state = BackupState::Deleting;
                        }
                    }
                }
            }
        }
        if let Some(view) = self.views.get_mut(&key) {
            view.sequence = sequence;
            self.changed.insert(RecordKey::Backup { project, id: backup_id });
        }
        Ok(true)
    }

    /// Folds a fact its cluster (or the control plane) stated about a backup, from `bound`, its subject.
    /// `Ok(false)` when it changed nothing (an unknown backup, or a fact folded before); refused when the
    /// backup is not of the subject's instance, was made on another cluster, or its reported location is
    /// not its own artifact's.
    pub(crate) fn apply_observed(
        &mut self,
        sequence: u64,
        bound: &ObservedSubject<'_>,
        message: &ObservedMessage,
    ) -> Result<bool, FactRefused> {
        let Some(backup_id) = message.event.backup_id() else { return Ok(false) };
        let key = (bound.project.to_owned(), backup_id);
        let Some(view) = self.views.get_mut(&key) else { return Ok(false) };
        let source = &view.source;
        if source.instance_id != bound.instance_id
            || (!bound.from_control_plane() && source.cluster != bound.source)
        {
            return Err(FactRefused::ForeignBackup {
                backup: backup_id.to_string(),
                owner: format!("{}/{}/{}", source.cluster, source.project, source.instance_id),
                reporter: format!("{}/{}/{}", bound.source, bound.project, bound.instance_id),
            });
        }
        if let ObservedEvent::BackupCompleted { location, .. } = &message.event {
            domain::backup::check_location(source, backup_id, location)?;
        }
        if view.sequence >= sequence {
            return Ok(false);
        }
        let deleting = view.deletion_operation.is_some();
        // An outcome is final: a completed or failed backup never changes (a fact reported again, by an
        // agent that died before recording that it had reported it, changes nothing).
        let finished = view.finished_at.is_some();
        match &message.event {
            ObservedEvent::BackupCompleted { .. } | ObservedEvent::BackupFailed { .. } if finished => {
                return Ok(false);
            }
            ObservedEvent::BackupStarted { .. } => {
                view.started_at.get_or_insert(message.time);
                if view.state == BackupState::Requested {
                    view.state = BackupState::Running;
                }
            }
            ObservedEvent::BackupCompleted { location, size_bytes, sha256, duration_ms, .. } => {
                view.location = Some(location.clone());
                view.size_bytes = Some(*size_bytes);
                view.sha256 = sha256.clone();
                view.duration_ms = Some(*duration_ms);
                view.finished_at = Some(message.time);
                view.started_at.get_or_insert(message.time);
                view.state = if deleting { BackupState::Deleting } else { BackupState::Completed };
            }
            ObservedEvent::BackupFailed { reason, .. } => {
                view.reason = Some(reason.clone());
                view.finished_at = Some(message.time);
                view.state = if deleting { BackupState::Deleting } else { BackupState::Failed };
            }
            ObservedEvent::BackupVerified { matches, detail, .. } => {
                view.verified = Some(*matches);
                view.verification_detail.clone_from(detail);
            }
            ObservedEvent::BackupDeleted { .. } => view.state = BackupState::Deleted,
            ObservedEvent::InstanceObserved(_)
            | ObservedEvent::DriftHealed { .. }
            | ObservedEvent::InstanceRemoved { .. } => return Ok(false),
        }
        view.sequence = sequence;
        self.changed.insert(RecordKey::Backup { project: key.0, id: backup_id });
        Ok(true)
    }

    /// The changed records, encoded.
    pub(crate) fn take_changes(&mut self) -> Vec<(RecordKey, Vec<u8>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|key| {
                let RecordKey::Backup { project, id } = &key else { return None };
                let view = self.views.get(&(project.clone(), *id))?;
                Some((key, serde_json::to_vec(view).expect("read models serialize")))
            })
            .collect()
    }

    /// How many records changed since the last take.
    pub(crate) fn changed_records(&self) -> usize {
        self.changed.len()
    }

    pub(crate) fn load(&mut self, project: &str, id: Uuid, view: BackupView) {
        self.views.insert((project.to_owned(), id), view);
    }

    pub(crate) fn newest_record(&self) -> u64 {
        self.views.values().map(|v| v.sequence).max().unwrap_or(0)
    }

    pub(crate) fn differences(&self, other: &Self, keys: &mut BTreeSet<String>) {
        for (project, id) in self.views.keys().chain(other.views.keys()) {
            let key = (project.clone(), *id);
            if self.views.get(&key) != other.views.get(&key) {
                keys.insert(RecordKey::Backup { project: project.clone(), id: *id }.key());
            }
        }
    }

    /// Every backup, in (project, id) order.
    pub fn all(&self) -> impl Iterator<Item = &BackupView> {
        self.views.values()
    }

    /// One backup.
    /// Backup `id` of `project` as a restore's rules need it (`None`: the project has no such backup):
    /// unusable when it failed, is deleted, or its object is not as its cluster reported.
    pub fn restore_source(
        &self,
        project: &str,
        id: Uuid,
    ) -> Option<domain::instance::restore::RestoreSource> {
        let view = self.get(project, id)?;
        let unusable = match view.state {
            BackupState::Failed => {
                Some(format!("it failed: {}", view.reason.as_deref().unwrap_or("no reason given")))
            }
            BackupState::Deleting | BackupState::Deleted => Some("it was deleted".to_owned()),
            _ if view.verified == Some(false) => Some(format!(
                "its object is not as its cluster reported ({})",
                view.verification_detail.as_deref().unwrap_or("checked")
            )),
            _ => None,
        };
        Some(domain::instance::restore::RestoreSource {
            backup_id: id,
            instance_id: view.source.instance_id,
            service: view.source.service,
            version: view.source.version.clone(),
            location: view.location.clone(),
            unusable,
            point_in_time: None,
        })
    }

    pub fn get(&self, project: &str, id: Uuid) -> Option<&BackupView> {
        self.views.get(&(project.to_owned(), id))
    }

    /// The backups of one instance, newest first (ids are UUIDv7), optionally only those in `state`,
    /// after the backup `after` (exclusive, for paging), at most `limit`.
    pub fn of_instance(
        &self,
        project: &str,
        instance_id: Uuid,
        state: Option<BackupState>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Vec<&BackupView> {
        let mut found: Vec<&BackupView> = self
            .views
            .range((project.to_owned(), Uuid::nil())..=(project.to_owned(), Uuid::max()))
            .map(|(_, v)| v)
            .filter(|v| v.source.instance_id == instance_id)
            .filter(|v| state.is_none_or(|s| v.state == s))
            .collect();
        found.sort_by_key(|b| std::cmp::Reverse(b.id));
        found.into_iter().filter(|v| after.is_none_or(|a| v.id < a)).take(limit).collect()
    }
}

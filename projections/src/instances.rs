//! Instance and operation views: the desired state of every instance and the operations that changed it.
//!
//! Each record remembers the last stream sequence folded into it, so a message is applied to a record at
//! most once even when a projector that died between writing some records and writing its checkpoint
//! replays messages. Operation records are immutable and written in pages, several per write; an
//! operation's state is derived, when it is read, from its instance's observed state, so it never needs
//! a write of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{
    Instance,
    instance::{APPLIED_ASPECTS, changed_aspects},
    observed::ObservedEvent,
};
use serde::{Deserialize, Serialize};
use streams::{DecodeError, EventBatch, observed::ObservedMessage, read_models::RecordKey};
use uuid::Uuid;

mod operations;
mod view;

pub use operations::{OperationKind, OperationRecord, OperationState, OperationView};
use operations::{backup_operation_state, operation_state};
pub use view::{DriftRecord, InstanceView, LeftCluster, UserState, UserView, user_views};

use crate::{
    backups::{BackupView, Backups},
    facts::{FactRefused, bound_to_subject},
    status::Health,
};

/// Why a message was not applied. It is counted, reported and skipped; a projection never stops on one.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// the payload could not be decoded (unknown event type or schema version, or garbage)
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// the aggregate id is not `<project>.<uuid>`
    #[error("unexpected aggregate id {0:?}")]
    AggregateId(String),
    /// a fact from a cluster that its subject, its payload and the desired state do not agree on
    #[error("fact refused: {0}")]
    Refused(#[from] FactRefused),
}

/// Version of the stored record formats. A projector finding another version in the checkpoint folds
/// the stream again from the start: read models are derived data.
pub const RECORD_SCHEMA: u32 = 4;

/// Most operations in one page (about 250 bytes each: a page stays far below NATS' 1 MiB payload limit).
const OPERATIONS_PER_PAGE: usize = 1000;

/// How far the read models go: written after the records it covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// every message up to this stream sequence is folded into the records
    pub sequence: u64,
    /// how many of them could not be applied (unknown type or schema version) and were skipped
    pub skipped: u64,
    /// record format version
    pub schema: u32,
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("read model {key} is not readable by this version: {source}")]
pub struct RecordError {
    /// bucket key
    pub key: String,
    /// cause
    #[source]
    pub source: serde_json::Error,
}

/// All instance and operation views.
#[derive(Debug, Clone, Default)]
pub struct ReadModel {
    instances: BTreeMap<(String, Uuid), InstanceView>,
    backups: Backups,
    operations: HashMap<Uuid, OperationRecord>,
    last_sequence: u64,
    skipped: u64,
    /// instance records changed since [`Self::take_changes`]
    changed: BTreeSet<RecordKey>,
    /// operations created since [`Self::take_changes`], in stream order
    new_operations: Vec<Uuid>,
}

/// Equal content; what changed since the last write does not count.
impl PartialEq for ReadModel {
    fn eq(&self, other: &Self) -> bool {
        self.instances == other.instances
            && self.backups == other.backups
            && self.operations == other.operations
            && self.last_sequence == other.last_sequence
            && self.skipped == other.skipped
    }
}

impl ReadModel {
    /// Stream sequence of the last message applied (or skipped).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// How far this model goes.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { sequence: self.last_sequence, skipped: self.skipped, schema: RECORD_SCHEMA }
    }

    /// How many messages could not be applied and were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Number of instances and operations.
    pub fn len(&self) -> (usize, usize) {
        (self.instances.len(), self.operations.len())
    }

    /// Applies the message at `sequence` on `subject`, stored by the stream at `stored_at`: an instance
    /// event batch or an observed-state event (checked first, see [`crate::facts`]; dated by the stream,
    /// not by its payload). Messages at or below the last applied sequence are ignored, and so is a
    /// message already folded into the record it concerns, so redelivery and replay are harmless. The
    /// sequence counts as applied even when the message is refused (and counted as skipped), so one
    /// undecodable message never blocks the ones after it.
    pub fn apply_message(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
        stored_at: DateTime<Utc>,
    ) -> Result<bool, ApplyError> {
        if sequence <= self.last_sequence {
            return Ok(false);
        }
        self.last_sequence = sequence;
        let result = if streams::observed::is_observed_subject(subject) {
            self.apply_observed(sequence, subject, payload, stored_at)
        } else {
            self.apply_batch(sequence, payload)
        };
        if result.is_err() {
            self.skipped += 1;
        }
        result
    }

    fn apply_batch(&mut self, sequence: u64, payload: &[u8]) -> Result<bool, ApplyError> {
        let batch = EventBatch::from_slice(payload)?;
        if batch.aggregate_type == <domain::Backup as Aggregate>::TYPE {
            return self.apply_backup_batch(sequence, &batch);
        }
        if batch.aggregate_type != <Instance as Aggregate>::TYPE {
            return Ok(false);
        }
        let events = batch.decode_events::<Instance>()?;
        let (project, id) = batch
            .aggregate_id
            .split_once('.')
            .and_then(|(p, id)| Some((p.to_owned(), id.parse::<Uuid>().ok()?)))
            .ok_or_else(|| ApplyError::AggregateId(batch.aggregate_id.clone()))?;
        let time = batch.metadata.time;
        let key = (project.clone(), id);
        // Each applied aspect the command changed, at the version of its last event that did.
        let aspects: BTreeMap<_, _> = changed_aspects(&events, batch.first_version)
            .into_iter()
            .filter(|(aspect, _)| APPLIED_ASPECTS.contains(aspect))
            .collect();
        let folded = self.instances.get(&key).is_some_and(|view| view.sequence >= sequence);
        if !folded {
            let view = self.instances.entry(key.clone()).or_insert_with(|| InstanceView::new(time));
            view.fold_events(events, &batch, sequence);
            if view.instance.spec().is_none() {
                // Events of an instance whose provisioning we never saw: nothing to show.
                self.instances.remove(&key);
                return Ok(true);
            }
            self.changed.insert(RecordKey::Instance { project: project.clone(), id });
        }
        let (command_id, kind) = (batch.metadata.command_id, batch.metadata.operation);
        if let std::collections::hash_map::Entry::Vacant(entry) = self.operations.entry(command_id) {
            entry.insert(OperationRecord {
                id: command_id,
                kind,
                project: project.clone(),
                instance_id: id,
                instance_version: batch.last_version(),
                aspects,
                backup_id: None,
                sequence,
                created_at: time,
            });
            self.new_operations.push(command_id);
        }
        Ok(true)
    }

    fn apply_backup_batch(&mut self, sequence: u64, batch: &EventBatch) -> Result<bool, ApplyError> {
        if !self.backups.apply_batch(sequence, batch)? {
            return Ok(false);
        }
        let (project, instance_id, backup_id) = streams::backups::parse_aggregate_id(&batch.aggregate_id)
            .ok_or_else(|| ApplyError::AggregateId(batch.aggregate_id.clone()))?;
        let command_id = batch.metadata.command_id;
        if let std::collections::hash_map::Entry::Vacant(entry) = self.operations.entry(command_id) {
            entry.insert(OperationRecord {
                id: command_id,
                kind: batch.metadata.operation,
                project,
                instance_id,
                instance_version: 0,
                aspects: BTreeMap::new(),
                backup_id: Some(backup_id),
                sequence,
                created_at: batch.metadata.time,
            });
            self.new_operations.push(command_id);
        }
        Ok(true)
    }

    fn apply_observed(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
        stored_at: DateTime<Utc>,
    ) -> Result<bool, ApplyError> {
        let mut message = ObservedMessage::from_slice(payload)?;
        let bound = bound_to_subject(subject, &message)?;
        message.time = stored_at;
        if message.event.backup_id().is_some() {
            return Ok(self.backups.apply_observed(sequence, &bound, &message)?);
        }
        let key = (bound.project.to_owned(), bound.instance_id);
        let Some(view) = self.instances.get_mut(&key) else {
            return Err(FactRefused::UnknownInstance(format!("{}/{}", key.0, key.1)).into());
        };
        if view.sequence >= sequence {
            return Ok(false);
        }
        let placed = view.spec().cluster.clone();
        if placed != bound.source {
            return match migration_fact(view, bound.source, message.event) {
                Some(folded) => {
                    if folded {
                        view.sequence = sequence;
                        view.messages += 1;
                        self.changed.insert(RecordKey::Instance { project: key.0, id: key.1 });
                    }
                    Ok(folded)
                }
                None => Err(FactRefused::NotPlacedThere {
                    instance: format!("{}/{}", key.0, key.1),
                    placed,
                    reporter: bound.source.to_owned(),
                }
                .into()),
            };
        }
        match message.event {
            ObservedEvent::InstanceObserved(state) => {
                // A cluster's facts reach the stream in the order its intake gate moved them, and a gate's
                // failover can put a report the agent made earlier after a later one (the dead gate's
                // unacknowledged facts are delivered again after newer ones). A report about an older
                // desired generation than the one held never replaces it: it would undo what the newer
                // one showed done (operations back in progress, the status behind the cluster).
                if view
                    .observed
                    .as_ref()
                    .is_some_and(|held| held.desired_generation > state.desired_generation)
                {
                    return Ok(false);
                }
                view.observed = Some(*state)
            }
            ObservedEvent::InstanceRemoved { .. } => view.removed = true,
            // Shown beside the status; it changes nothing the status is computed from.
            ObservedEvent::DriftHealed { objects, .. } => {
                view.last_drift = Some(DriftRecord { at: message.time, objects });
                view.sequence = sequence;
                view.messages += 1;
                self.changed.insert(RecordKey::Instance { project: key.0, id: key.1 });
                return Ok(true);
            }
            ObservedEvent::BackupStarted { .. }
            | ObservedEvent::BackupCompleted { .. }
            | ObservedEvent::BackupFailed { .. }
            | ObservedEvent::BackupVerified { .. }
            | ObservedEvent::BackupDeleted { .. } => unreachable!("backup facts are folded above"),
        }
        view.observed_at = Some(message.time);
        view.refresh_status(message.time);
        view.sequence = sequence;
        view.messages += 1;
        self.changed.insert(RecordKey::Instance { project: key.0, id: key.1 });
        Ok(true)
    }

    /// The records changed since the last call, encoded for the read-model bucket: every changed instance,
    /// and the new operations in pages. The checkpoint is not among them: it must be written after them.
    pub fn take_changes(&mut self) -> Vec<(RecordKey, Vec<u8>)> {
        let changed = std::mem::take(&mut self.changed);
        let mut records: Vec<_> = changed
            .into_iter()
            .filter_map(|key| {
                let RecordKey::Instance { project, id } = &key else { return None };
                let view = self.instances.get(&(project.clone(), *id))?;
                Some((key, serde_json::to_vec(view).expect("read models serialize")))
            })
            .collect();
        records.extend(self.backups.take_changes());
        let new_operations = std::mem::take(&mut self.new_operations);
        for page in new_operations.chunks(OPERATIONS_PER_PAGE) {
            let operations: Vec<&OperationRecord> =
                page.iter().filter_map(|id| self.operations.get(id)).collect();
            let Some(first) = operations.first() else { continue };
            let key = RecordKey::OperationPage { first_sequence: first.sequence };
            records.push((key, serde_json::to_vec(&operations).expect("read models serialize")));
        }
        records
    }

    /// How many records changed since the last [`Self::take_changes`] (operations counted one by one).
    pub fn changed_records(&self) -> usize {
        self.changed.len() + self.backups.changed_records() + self.new_operations.len()
    }

    /// Loads one stored record (as written from [`Self::take_changes`] or the checkpoint).
    pub fn load_record(&mut self, key: &RecordKey, value: &[u8]) -> Result<(), RecordError> {
        let error = |source| RecordError { key: key.key(), source };
        match key {
            RecordKey::Instance { project, id } => {
                let view: InstanceView = serde_json::from_slice(value).map_err(error)?;
                self.instances.insert((project.clone(), *id), view);
            }
            RecordKey::Backup { project, id } => {
                let view: BackupView = serde_json::from_slice(value).map_err(error)?;
                self.backups.load(project, *id, view);
            }
            RecordKey::OperationPage { .. } => {
                let page: Vec<OperationRecord> = serde_json::from_slice(value).map_err(error)?;
                self.operations.extend(page.into_iter().map(|op| (op.id, op)));
            }
            RecordKey::Checkpoint => {
                let checkpoint: Checkpoint = serde_json::from_slice(value).map_err(error)?;
                self.last_sequence = checkpoint.sequence;
                self.skipped = checkpoint.skipped;
            }
        }
        Ok(())
    }

    /// The highest stream sequence folded into any record.
    pub fn newest_record(&self) -> u64 {
        let instances = self.instances.values().map(|v| v.sequence);
        let newest = instances.chain(self.operations.values().map(|op| op.sequence)).max().unwrap_or(0);
        newest.max(self.backups.newest_record())
    }

    /// Keys whose records differ between `self` and `other` (for rebuild verification), at most `limit`.
    pub fn differences(&self, other: &Self, limit: usize) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for (project, id) in self.instances.keys().chain(other.instances.keys()) {
            if self.instances.get(&(project.clone(), *id)) != other.instances.get(&(project.clone(), *id)) {
                keys.insert(RecordKey::Instance { project: project.clone(), id: *id }.key());
            }
        }
        self.backups.differences(&other.backups, &mut keys);
        for (id, op) in self.operations.iter().chain(other.operations.iter()) {
            if self.operations.get(id) != other.operations.get(id) {
                keys.insert(format!("operation {}.{id}", op.project));
            }
        }
        if self.checkpoint() != other.checkpoint() {
            keys.insert(RecordKey::Checkpoint.key());
        }
        keys.into_iter().take(limit).collect()
    }

    /// Every backup.
    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// Every instance, in (project, id) order.
    pub fn all_instances(&self) -> impl Iterator<Item = &InstanceView> {
        self.instances.values()
    }

    /// One instance.
    pub fn instance(&self, project: &str, id: Uuid) -> Option<&InstanceView> {
        self.instances.get(&(project.to_owned(), id))
    }

    /// Instances of a project in id order (UUIDv7: creation order), after `after`, at most `limit`,
    /// optionally only the one called `name`.
    pub fn list(
        &self,
        project: &str,
        after: Option<Uuid>,
        limit: usize,
        name: Option<&str>,
        state: Option<Health>,
    ) -> Vec<&InstanceView> {
        let start = (project.to_owned(), after.unwrap_or(Uuid::nil()));
        self.instances
            .range(start..)
            .take_while(|((p, _), _)| p == project)
            .filter(|((_, id), _)| after.is_none_or(|a| *id != a))
            .map(|(_, view)| view)
            .filter(|view| name.is_none_or(|n| view.spec().name == n))
            .filter(|view| state.is_none_or(|s| view.status.state == s))
            .take(limit)
            .collect()
    }

    /// One operation of a project, its state derived from what the instance's agent last reported.
    pub fn operation(&self, project: &str, id: Uuid) -> Option<OperationView> {
        let record = self.operations.get(&id).filter(|op| op.project == project)?;
        let instance = self.instances.get(&(record.project.clone(), record.instance_id));
        let state = match record.backup_id {
            Some(backup) => backup_operation_state(record, self.backups.get(project, backup)),
            None => operation_state(
                record,
                instance.and_then(|view| view.observed.as_ref()),
                instance.is_some_and(|view| view.removed),
            ),
        };
        Some(OperationView {
            id: record.id,
            kind: record.kind,
            state,
            project: record.project.clone(),
            instance_id: record.instance_id,
            instance_version: record.instance_version,
            backup_id: record.backup_id,
            sequence: record.sequence,
            created_at: record.created_at,
        })
    }
}

#[cfg(test)]
mod tests;

/// A fact about an instance from a cluster it is not placed on, which a migration involves: the copy on
/// the target (kept apart until the migration completes), or the cluster a migration took it off
/// reporting its objects gone. `Some(folded)` when the fact is one of those, `None` when the cluster has
/// no business with the instance (refused).
fn migration_fact(view: &mut InstanceView, reporter: &str, event: ObservedEvent) -> Option<bool> {
    let target = view.instance.migration().is_some_and(|m| m.to == reporter && m.target.is_some());
    if target {
        let ObservedEvent::InstanceObserved(state) = event else { return Some(false) };
        // As for the instance's own reports: an older desired generation never replaces a newer one.
        if view
            .migration_target
            .as_ref()
            .is_some_and(|held| held.desired_generation > state.desired_generation)
        {
            return Some(false);
        }
        view.migration_target = Some(*state);
        return Some(true);
    }
    let left = view.left.as_mut().filter(|left| left.cluster == reporter)?;
    // Late reports of what it ran are history; only "every object gone" is news.
    let removed = matches!(event, ObservedEvent::InstanceRemoved { .. }) && !left.removed;
    left.removed |= removed;
    Some(removed)
}

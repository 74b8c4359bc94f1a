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
    Instance, InstanceEvent,
    instance::InstanceSpec,
    observed::{ObservedEvent, ObservedState},
};
use serde::{Deserialize, Serialize};
use streams::{DecodeError, EventBatch, read_models::RecordKey};
use uuid::Uuid;

use crate::status::{self, Aspect, Health, Inputs, Status};

/// An observed-state message as cluster agents write it.
#[derive(Debug, Deserialize)]
struct ObservedMessage {
    project: String,
    instance_id: Uuid,
    time: DateTime<Utc>,
    event: ObservedEvent,
}

/// Objects of an instance that were changed or deleted outside the control plane and put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// when the agent reported it
    pub at: DateTime<Utc>,
    /// the objects (`Kind/name`)
    pub objects: Vec<String>,
}

/// One instance as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// the folded aggregate (desired state and lifecycle)
    pub instance: Instance,
    /// aggregate version (number of events)
    pub version: u64,
    /// stream sequence of the last message (instance events or observed state) folded into this record
    pub sequence: u64,
    /// how many stream messages were folded into this record: a rebuild that agrees on it proves that no
    /// message was applied twice or missed
    pub messages: u64,
    /// when it was provisioned
    pub created_at: DateTime<Utc>,
    /// when it last changed
    pub updated_at: DateTime<Utc>,
    /// the operation that started deprovisioning, once it did
    pub deprovision_operation: Option<Uuid>,
    /// generation that last changed each cluster-relevant aspect
    pub changed_at: [(Aspect, u64); 3],
    /// generation at which deprovisioning began
    pub deprovisioning: Option<u64>,
    /// the agent reported every object gone
    pub removed: bool,
    /// latest observed state reported by the cluster's agent
    pub observed: Option<ObservedState>,
    /// when the agent last reported
    pub observed_at: Option<DateTime<Utc>>,
    /// the last time the agent put back objects changed or deleted outside the control plane
    #[serde(default)]
    pub last_drift: Option<DriftRecord>,
    /// desired compared with observed
    pub status: Status,
}

impl InstanceView {
    fn refresh_status(&mut self, now: DateTime<Utc>) {
        let inputs = Inputs {
            generation: self.version,
            changed_at: self.changed_at,
            deprovisioning: self.deprovisioning,
            removed: self.removed,
            observed: self.observed.as_ref(),
        };
        self.status = status::compute(inputs, Some(&self.status), now);
    }

    /// The desired state. Views exist only for provisioned instances, so this is always there.
    pub fn spec(&self) -> &InstanceSpec {
        self.instance.spec().expect("views are created by InstanceProvisioned")
    }
}

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// created the instance
    Provision,
    /// changed the instance
    Update,
    /// started removing the instance
    Deprovision,
}

impl OperationKind {
    /// From the `operation` metadata the API records.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provision" => Some(Self::Provision),
            "update" => Some(Self::Update),
            "deprovision" => Some(Self::Deprovision),
            _ => None,
        }
    }

    /// The metadata form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Update => "update",
            Self::Deprovision => "deprovision",
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    /// its events are stored; the cluster has not yet observed the generation it produced
    InProgress,
    /// the cluster's agent observed the generation it produced (or, for a deprovision, that everything
    /// is gone); a newer change that superseded it before it was applied also completes it
    Succeeded,
    /// the cluster's agent reports a failure while applying it
    Failed {
        /// the agent's reason
        reason: String,
        /// whether an older generation is still running and usable
        instance_usable: bool,
        /// whether repeating the change may succeed
        update_repeatable: bool,
    },
}

/// An operation as stored: what it did, never where it is (that is derived from its instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// operation id (the command id)
    pub id: Uuid,
    /// what it did
    pub kind: OperationKind,
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// instance version it produced
    pub instance_version: u64,
    /// stream sequence of its events
    pub sequence: u64,
    /// when it was committed
    pub created_at: DateTime<Utc>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationView {
    /// operation id (the command id)
    pub id: Uuid,
    /// what it did
    pub kind: OperationKind,
    /// where it is
    pub state: OperationState,
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// instance version it produced
    pub instance_version: u64,
    /// stream sequence of its events
    pub sequence: u64,
    /// when it was committed
    pub created_at: DateTime<Utc>,
}

/// Why a message was not applied. It is counted, reported and skipped; a projection never stops on one.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// the payload could not be decoded (unknown event type or schema version, or garbage)
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// the aggregate id is not `<project>.<uuid>`
    #[error("unexpected aggregate id {0:?}")]
    AggregateId(String),
}

/// Where an operation is, given what the cluster's agent last reported.
fn operation_state(op: &OperationRecord, observed: Option<&ObservedState>, removed: bool) -> OperationState {
    if op.kind == OperationKind::Deprovision {
        return if removed { OperationState::Succeeded } else { OperationState::InProgress };
    }
    let Some(observed) = observed else { return OperationState::InProgress };
    let applied = observed.observed_generation.unwrap_or(0);
    if applied >= op.instance_version {
        return OperationState::Succeeded;
    }
    if observed.phase == domain::observed::ObservedPhase::Failed
        && observed.desired_generation >= op.instance_version
    {
        return OperationState::Failed {
            reason: observed.reason.clone().unwrap_or_else(|| "Failed".into()),
            instance_usable: observed.observed_generation.is_some(),
            update_repeatable: true,
        };
    }
    OperationState::InProgress
}

/// Version of the stored record formats. A projector finding another version in the checkpoint folds
/// the stream again from the start: read models are derived data.
pub const RECORD_SCHEMA: u32 = 2;

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

    /// Applies the message at `sequence` on `subject`: an instance event batch or an observed-state event.
    /// Messages at or below the last applied sequence are ignored, and so is a message already folded into
    /// the record it concerns, so redelivery and replay are harmless. The sequence counts as applied even
    /// when the message is refused (and counted as skipped), so one undecodable message never blocks the
    /// ones after it.
    pub fn apply_message(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Result<bool, ApplyError> {
        if sequence <= self.last_sequence {
            return Ok(false);
        }
        self.last_sequence = sequence;
        let result = if subject.starts_with(streams::topology::OBSERVED_PREFIX) {
            self.apply_observed(sequence, payload)
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
        let command_id = batch.metadata.command_id;
        if let Some(kind) = OperationKind::parse(&batch.metadata.operation)
            && !self.operations.contains_key(&command_id)
        {
            self.operations.insert(
                command_id,
                OperationRecord {
                    id: command_id,
                    kind,
                    project: project.clone(),
                    instance_id: id,
                    instance_version: batch.last_version(),
                    sequence,
                    created_at: time,
                },
            );
            self.new_operations.push(command_id);
        }
        Ok(true)
    }

    fn apply_observed(&mut self, sequence: u64, payload: &[u8]) -> Result<bool, ApplyError> {
        let message: ObservedMessage =
            serde_json::from_slice(payload).map_err(|e| ApplyError::Decode(DecodeError::Malformed(e)))?;
        let key = (message.project, message.instance_id);
        let Some(view) = self.instances.get_mut(&key) else { return Ok(false) };
        if view.sequence >= sequence {
            return Ok(false);
        }
        match message.event {
            ObservedEvent::InstanceObserved(state) => view.observed = Some(state),
            ObservedEvent::InstanceRemoved { .. } => view.removed = true,
            // Shown beside the status; it changes nothing the status is computed from.
            ObservedEvent::DriftHealed { objects, .. } => {
                view.last_drift = Some(DriftRecord { at: message.time, objects });
                view.sequence = sequence;
                view.messages += 1;
                self.changed.insert(RecordKey::Instance { project: key.0, id: key.1 });
                return Ok(true);
            }
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
        self.changed.len() + self.new_operations.len()
    }

    /// Loads one stored record (as written from [`Self::take_changes`] or the checkpoint).
    pub fn load_record(&mut self, key: &RecordKey, value: &[u8]) -> Result<(), RecordError> {
        let error = |source| RecordError { key: key.key(), source };
        match key {
            RecordKey::Instance { project, id } => {
                let view: InstanceView = serde_json::from_slice(value).map_err(error)?;
                self.instances.insert((project.clone(), *id), view);
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
        instances.chain(self.operations.values().map(|op| op.sequence)).max().unwrap_or(0)
    }

    /// Keys whose records differ between `self` and `other` (for rebuild verification), at most `limit`.
    pub fn differences(&self, other: &Self, limit: usize) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for (project, id) in self.instances.keys().chain(other.instances.keys()) {
            if self.instances.get(&(project.clone(), *id)) != other.instances.get(&(project.clone(), *id)) {
                keys.insert(RecordKey::Instance { project: project.clone(), id: *id }.key());
            }
        }
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
        let state = operation_state(
            record,
            instance.and_then(|view| view.observed.as_ref()),
            instance.is_some_and(|view| view.removed),
        );
        Some(OperationView {
            id: record.id,
            kind: record.kind,
            state,
            project: record.project.clone(),
            instance_id: record.instance_id,
            instance_version: record.instance_version,
            sequence: record.sequence,
            created_at: record.created_at,
        })
    }
}

const TRACKED_ASPECTS: [(Aspect, u64); 3] =
    [(Aspect::Version, 0), (Aspect::Resources, 0), (Aspect::Configuration, 0)];

impl InstanceView {
    fn new(time: DateTime<Utc>) -> Self {
        let inputs = Inputs {
            generation: 0,
            changed_at: TRACKED_ASPECTS,
            deprovisioning: None,
            removed: false,
            observed: None,
        };
        Self {
            instance: Instance::default(),
            version: 0,
            sequence: 0,
            messages: 0,
            created_at: time,
            updated_at: time,
            deprovision_operation: None,
            changed_at: TRACKED_ASPECTS,
            deprovisioning: None,
            removed: false,
            observed: None,
            observed_at: None,
            last_drift: None,
            status: status::compute(inputs, None, time),
        }
    }

    fn fold_events(&mut self, events: Vec<InstanceEvent>, batch: &EventBatch, sequence: u64) {
        let generation = batch.last_version();
        for event in events {
            let touched: &[Aspect] = match &event {
                InstanceEvent::InstanceProvisioned(_) => {
                    &[Aspect::Version, Aspect::Resources, Aspect::Configuration]
                }
                InstanceEvent::VersionUpgraded { .. } => &[Aspect::Version],
                InstanceEvent::PlanChanged { .. } | InstanceEvent::StorageExpanded { .. } => {
                    &[Aspect::Resources]
                }
                InstanceEvent::ConfigurationChanged { .. } => &[Aspect::Configuration],
                InstanceEvent::DeprovisioningStarted {} => {
                    self.deprovision_operation = Some(batch.metadata.command_id);
                    self.deprovisioning = Some(generation);
                    &[]
                }
                InstanceEvent::DescriptionChanged { .. }
                | InstanceEvent::DeletionProtectionChanged { .. } => &[],
            };
            for (aspect, changed) in &mut self.changed_at {
                if touched.contains(aspect) {
                    *changed = generation;
                }
            }
            self.instance.apply(event);
        }
        let time = batch.metadata.time;
        self.version = generation;
        self.refresh_status(time);
        self.sequence = sequence;
        self.messages += 1;
        self.updated_at = time;
    }
}

#[cfg(test)]
mod tests {
    use domain::{
        ServiceType,
        catalog::Resources,
        instance::InstanceProvisioned,
        observed::{ObservedPhase, ObservedState},
    };
    use serde_json::json;

    use super::*;

    /// A stream of messages as the store and agents write them: (subject, payload).
    struct Log {
        id: Uuid,
        version: u64,
        messages: Vec<(String, Vec<u8>)>,
    }

    impl Log {
        fn new() -> Self {
            Self { id: Uuid::now_v7(), version: 0, messages: Vec::new() }
        }

        fn command(&mut self, operation: &str, events: Vec<InstanceEvent>) -> Uuid {
            let mut metadata = streams::CommandMetadata::new(operation, "test");
            metadata.time = DateTime::from_timestamp(1_000 + self.messages.len() as i64, 0).unwrap();
            let batch = EventBatch {
                aggregate_type: <Instance as Aggregate>::TYPE.to_owned(),
                aggregate_id: format!("acme.{}", self.id),
                first_version: self.version + 1,
                events: EventBatch::encode_events::<Instance>(&events).unwrap(),
                metadata: metadata.clone(),
                snapshot: None,
            };
            self.version += events.len() as u64;
            self.messages
                .push((format!("cp.evt.eu-1.acme.{}", self.id), serde_json::to_vec(&batch).unwrap()));
            metadata.command_id
        }

        fn provision(&mut self) -> Uuid {
            let provisioned = InstanceProvisioned {
                instance_id: self.id,
                project: "acme".into(),
                name: "db".into(),
                service: ServiceType::Postgresql,
                version: "16".into(),
                plan: "starter".into(),
                resources: Resources { cpu_millis: 500, memory_mib: 1024, replicas: 1 },
                storage_gib: 10,
                config: Default::default(),
                description: String::new(),
                deletion_protection: false,
                cluster: "eu-1".into(),
            };
            self.command("provision", vec![InstanceEvent::InstanceProvisioned(provisioned)])
        }

        fn describe(&mut self, text: &str) -> Uuid {
            self.command("update", vec![InstanceEvent::DescriptionChanged { description: text.into() }])
        }

        fn observe(&mut self, observed: Option<u64>, phase: ObservedPhase) {
            let state = ObservedState {
                instance_id: self.id,
                observed_generation: observed,
                desired_generation: self.version,
                phase,
                ready_replicas: 1,
                desired_replicas: 1,
                running_version: None,
                config_hash: None,
                reason: (phase == ObservedPhase::Failed).then(|| "CrashLoopBackOff".into()),
            };
            let message = json!({"project": "acme", "instance_id": self.id,
                "time": format!("2026-01-01T00:00:{:02}Z", self.messages.len() % 60),
                "event": ObservedEvent::InstanceObserved(state)});
            self.messages
                .push((format!("cp.obs.eu-1.acme.{}", self.id), serde_json::to_vec(&message).unwrap()));
        }

        fn fold(&self, model: &mut ReadModel, from: usize, to: usize) {
            for (n, (subject, payload)) in self.messages.iter().enumerate().take(to).skip(from) {
                let _ = model.apply_message(n as u64 + 1, subject, payload);
            }
        }
    }

    /// What a bucket holds: the records written, the checkpoint written after them.
    fn store(written: &[(RecordKey, Vec<u8>)], checkpoint: Checkpoint) -> ReadModel {
        let mut loaded = ReadModel::default();
        for (key, value) in written {
            loaded.load_record(key, value).unwrap();
        }
        loaded.load_record(&RecordKey::Checkpoint, &serde_json::to_vec(&checkpoint).unwrap()).unwrap();
        loaded
    }

    #[test]
    fn a_projector_that_died_between_records_and_checkpoint_applies_nothing_twice() {
        // given a log of provision, observations and description changes
        let mut log = Log::new();
        log.provision();
        log.observe(Some(1), ObservedPhase::Ready);
        for n in 0..6 {
            log.describe(&format!("change {n}"));
        }
        log.observe(Some(7), ObservedPhase::Ready);
        let mut clean = ReadModel::default();
        log.fold(&mut clean, 0, log.messages.len());

        // when a projector flushed messages 1..=3 with their checkpoint, folded 4..=6, wrote only some of
        // the changed records and died before the checkpoint
        let mut dying = ReadModel::default();
        log.fold(&mut dying, 0, 3);
        let mut bucket = dying.take_changes();
        let checkpoint = dying.checkpoint();
        log.fold(&mut dying, 3, 6);
        let partial = dying.take_changes();
        bucket.retain(|(key, _)| !partial.iter().any(|(k, _)| k == key));
        bucket.extend(partial.into_iter().filter(|(key, _)| matches!(key, RecordKey::Instance { .. })));

        // then a new projector loads the bucket, replays from the checkpoint and equals a clean fold
        let mut restarted = store(&bucket, checkpoint);
        assert_eq!(restarted.last_sequence(), 3);
        log.fold(&mut restarted, 3, log.messages.len());
        assert_eq!(restarted.differences(&clean, 10), Vec::<String>::new());
        assert_eq!(restarted.instance("acme", log.id).unwrap().messages, log.messages.len() as u64);
    }

    #[test]
    fn records_survive_the_round_trip_through_the_bucket() {
        let mut log = Log::new();
        log.provision();
        log.observe(Some(1), ObservedPhase::Ready);
        let mut model = ReadModel::default();
        log.fold(&mut model, 0, log.messages.len());
        let loaded = store(&model.take_changes(), model.checkpoint());
        assert_eq!(loaded, model);
        assert_eq!(loaded.instance("acme", log.id).unwrap().status.state, Health::Healthy);
    }

    #[test]
    fn a_backlog_is_written_as_one_record_per_instance_and_operations_in_pages() {
        let mut log = Log::new();
        log.provision();
        for n in 0..2_499 {
            log.describe(&format!("change {n}"));
        }
        let mut model = ReadModel::default();
        log.fold(&mut model, 0, log.messages.len());
        let records = model.take_changes();
        let keys: Vec<String> = records.iter().map(|(key, _)| key.key()).collect();
        assert_eq!(
            keys,
            [
                format!("instance.acme.{}", log.id),
                format!("operations.{:020}", 1),
                format!("operations.{:020}", 1001),
                format!("operations.{:020}", 2001)
            ]
        );
        assert_eq!(store(&records, model.checkpoint()), model);
        assert_eq!(model.take_changes(), Vec::new(), "nothing changed since");
    }

    #[test]
    fn an_operation_succeeds_once_its_generation_is_observed_and_fails_with_the_agents_reason() {
        let mut log = Log::new();
        log.provision();
        let change = log.describe("x");
        let mut model = ReadModel::default();
        log.fold(&mut model, 0, log.messages.len());
        assert_eq!(model.operation("acme", change).unwrap().state, OperationState::InProgress);
        assert_eq!(model.operation("other", change), None, "operations are per project");

        log.observe(Some(1), ObservedPhase::Failed);
        log.fold(&mut model, 2, 3);
        let OperationState::Failed { reason, instance_usable, .. } =
            model.operation("acme", change).unwrap().state
        else {
            panic!("a failure at the operation's generation fails it")
        };
        assert_eq!((reason.as_str(), instance_usable), ("CrashLoopBackOff", true));

        log.observe(Some(2), ObservedPhase::Ready);
        log.fold(&mut model, 3, 4);
        assert_eq!(model.operation("acme", change).unwrap().state, OperationState::Succeeded);
    }

    #[test]
    fn an_unknown_event_is_counted_and_skipped_and_the_next_one_applies() {
        let mut log = Log::new();
        log.provision();
        let unknown = json!({"aggregate_type": "instance", "aggregate_id": format!("acme.{}", log.id),
            "first_version": 2, "events": [{"type": "InstanceTeleported", "schema": "1", "data": {}}],
            "metadata": {"command_id": Uuid::now_v7(), "operation": "update", "actor": "x",
                "time": "2026-01-01T00:00:00Z"}});
        log.messages.push((log.messages[0].0.clone(), serde_json::to_vec(&unknown).unwrap()));
        log.version += 1;
        log.describe("after");
        let mut model = ReadModel::default();
        log.fold(&mut model, 0, log.messages.len());
        assert_eq!((model.skipped(), model.last_sequence()), (1, 3));
        assert_eq!(model.instance("acme", log.id).unwrap().spec().description, "after");
    }
}

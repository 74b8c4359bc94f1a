//! Instance and operation views: the desired state of every instance and the operations that changed it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{
    Instance, InstanceEvent,
    instance::InstanceSpec,
    observed::{ObservedEvent, ObservedState},
};
use serde::Deserialize;
use streams::{DecodeError, EventBatch};
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

/// One instance as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    /// the folded aggregate (desired state and lifecycle)
    pub instance: Instance,
    /// aggregate version (number of events)
    pub version: u64,
    /// stream sequence of the last event applied
    pub sequence: u64,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Why a batch was not applied. The runner reports and skips it; it never stops on one.
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
fn operation_state(op: &OperationView, observed: Option<&ObservedState>, removed: bool) -> OperationState {
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

/// All instance and operation views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadModel {
    instances: BTreeMap<(String, Uuid), InstanceView>,
    operations: HashMap<Uuid, OperationView>,
    last_sequence: u64,
}

impl ReadModel {
    /// Stream sequence of the last message applied (or skipped).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Applies the message at `sequence`. Messages at or below the last applied sequence are ignored, so
    /// redelivery is harmless. The sequence counts as applied even when the batch is refused, so one
    /// undecodable message never blocks the ones after it.
    pub fn apply(&mut self, sequence: u64, payload: &[u8]) -> Result<bool, ApplyError> {
        if sequence <= self.last_sequence {
            return Ok(false);
        }
        self.last_sequence = sequence;
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
        let view = self.instances.entry((project.clone(), id)).or_insert_with(|| InstanceView {
            instance: Instance::default(),
            version: 0,
            sequence: 0,
            created_at: time,
            updated_at: time,
            deprovision_operation: None,
            changed_at: [(Aspect::Version, 0), (Aspect::Resources, 0), (Aspect::Configuration, 0)],
            deprovisioning: None,
            removed: false,
            observed: None,
            observed_at: None,
            status: status::compute(
                Inputs {
                    generation: 0,
                    changed_at: [(Aspect::Version, 0), (Aspect::Resources, 0), (Aspect::Configuration, 0)],
                    deprovisioning: None,
                    removed: false,
                    observed: None,
                },
                None,
                time,
            ),
        });
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
                    view.deprovision_operation = Some(batch.metadata.command_id);
                    view.deprovisioning = Some(generation);
                    &[]
                }
                InstanceEvent::DescriptionChanged { .. }
                | InstanceEvent::DeletionProtectionChanged { .. } => &[],
            };
            for (aspect, changed) in &mut view.changed_at {
                if touched.contains(aspect) {
                    *changed = generation;
                }
            }
            view.instance.apply(event);
        }
        view.version = generation;
        view.refresh_status(time);
        view.sequence = sequence;
        view.updated_at = time;
        if view.instance.spec().is_none() {
            // Events of an instance whose provisioning we never saw: nothing to show.
            self.instances.remove(&(project, id));
            return Ok(true);
        }
        if let Some(kind) = OperationKind::parse(&batch.metadata.operation) {
            self.operations.insert(
                batch.metadata.command_id,
                OperationView {
                    id: batch.metadata.command_id,
                    kind,
                    state: OperationState::InProgress,
                    project,
                    instance_id: id,
                    instance_version: batch.last_version(),
                    sequence,
                    created_at: time,
                },
            );
        }
        Ok(true)
    }

    /// Applies the message at `sequence` on `subject`: an instance event batch or an observed-state event.
    pub fn apply_message(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Result<bool, ApplyError> {
        if !subject.starts_with(streams::topology::OBSERVED_PREFIX) {
            return self.apply(sequence, payload);
        }
        if sequence <= self.last_sequence {
            return Ok(false);
        }
        self.last_sequence = sequence;
        let message: ObservedMessage =
            serde_json::from_slice(payload).map_err(|e| ApplyError::Decode(DecodeError::Malformed(e)))?;
        let Some(view) = self.instances.get_mut(&(message.project, message.instance_id)) else {
            return Ok(false);
        };
        match message.event {
            ObservedEvent::InstanceObserved(state) => view.observed = Some(state),
            ObservedEvent::InstanceRemoved { .. } => view.removed = true,
            ObservedEvent::DriftHealed { .. } => return Ok(true),
        }
        view.observed_at = Some(message.time);
        view.refresh_status(message.time);
        let (observed, removed) = (view.observed.clone(), view.removed);
        for op in self.operations.values_mut().filter(|op| op.instance_id == message.instance_id) {
            op.state = operation_state(op, observed.as_ref(), removed);
        }
        Ok(true)
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

    /// One operation of a project.
    pub fn operation(&self, project: &str, id: Uuid) -> Option<&OperationView> {
        self.operations.get(&id).filter(|op| op.project == project)
    }
}

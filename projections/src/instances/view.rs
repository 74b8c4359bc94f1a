//! The record of one instance: its folded desired state, what its cluster last reported, its status,
//! and the last drift its agent healed.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{Instance, InstanceEvent, instance::InstanceSpec, observed::ObservedState};
use serde::{Deserialize, Serialize};
use streams::EventBatch;
use uuid::Uuid;

use crate::status::{self, Aspect, Inputs, Status};

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
    pub(super) fn refresh_status(&mut self, now: DateTime<Utc>) {
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

const TRACKED_ASPECTS: [(Aspect, u64); 3] =
    [(Aspect::Version, 0), (Aspect::Resources, 0), (Aspect::Configuration, 0)];

impl InstanceView {
    pub(super) fn new(time: DateTime<Utc>) -> Self {
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

    pub(super) fn fold_events(&mut self, events: Vec<InstanceEvent>, batch: &EventBatch, sequence: u64) {
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

//! The record of one instance: its folded desired state, what its cluster last reported, its status,
//! and the last drift its agent healed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{Instance, InstanceEvent, instance::InstanceSpec, observed::ObservedState};
use serde::{Deserialize, Serialize};
use streams::EventBatch;
use uuid::Uuid;

use domain::instance::{Generations, changed_aspects};

use crate::status::{self, Inputs, Status};

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
    /// generation that last changed each applied aspect
    pub changed: Generations,
    /// restart parameters changed since the configuration was last applied: they wait for a restart
    #[serde(default)]
    pub restart_pending: BTreeSet<String>,
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
    /// the copy a migration placed on its target cluster, as that cluster last reported it; it becomes
    /// `observed` when the migration completes
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_target: Option<ObservedState>,
    /// when the move in progress began (the time of its `MigrationStarted`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_started_at: Option<DateTime<Utc>>,
    /// when its last move was given up (a drain waits before it tries that instance again)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_failed_at: Option<DateTime<Utc>>,
    /// the cluster the instance's objects were last removed from by a migration (the source of a completed
    /// one, the target of a failed one), and whether its agent reported them gone
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<LeftCluster>,
}

/// A cluster a migration took an instance's objects off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftCluster {
    /// the cluster
    pub cluster: String,
    /// its agent reported every object of the instance gone
    pub removed: bool,
}

impl InstanceView {
    pub(super) fn refresh_status(&mut self, now: DateTime<Utc>) {
        let inputs = Inputs {
            generation: self.version,
            changed: self.changed,
            restart_pending: &self.restart_pending,
            deprovisioning: self.deprovisioning,
            removed: self.removed,
            observed: self.observed.as_ref(),
        };
        self.status = status::compute(inputs, Some(&self.status), now);
        if self.status.pending_restart.is_empty() {
            // Applied: the restart these waited for has been observed.
            self.restart_pending.clear();
        }
    }

    /// The record a reader shows for an instance whose desired state it has read from the stream
    /// (`instance` at `version`, last changed at `updated_at`) and whose observed side comes from `view`,
    /// the read model, which may lag that read. Status stays the read model's: it describes what the cluster
    /// last reported against the version the read model knew, and the conditions carry that generation.
    pub fn with_desired(
        view: Option<&InstanceView>,
        instance: Instance,
        version: u64,
        updated_at: DateTime<Utc>,
    ) -> InstanceView {
        match view {
            Some(view) if view.version == version => view.clone(),
            Some(view) => InstanceView { instance, version, updated_at, ..view.clone() },
            None => {
                // Not projected yet: nothing observed, so every aspect is still being applied.
                let mut fresh = InstanceView::new(updated_at);
                if version > 1 {
                    // The provision's own time is in a message this read did not fetch; the id (UUIDv7)
                    // was generated by the same request.
                    let id = instance.spec().and_then(|spec| spec.id.get_timestamp());
                    if let Some(at) = id.and_then(|t| {
                        let (secs, nanos) = t.to_unix();
                        DateTime::from_timestamp(secs as i64, nanos)
                    }) {
                        fresh.created_at = at;
                    }
                }
                fresh.instance = instance;
                fresh.version = version;
                fresh.changed = fresh.instance.generations();
                fresh.refresh_status(updated_at);
                fresh
            }
        }
    }

    /// The desired state. Views exist only for provisioned instances, so this is always there.
    pub fn spec(&self) -> &InstanceSpec {
        self.instance.spec().expect("views are created by InstanceProvisioned")
    }
}

/// Where a user of an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// the engine has the user as last asked (created, or with its last new password)
    Applied,
    /// the engine has not reported the last change of it yet
    Pending,
    /// the engine reports it cannot apply it (see the reason)
    Error,
}

/// One user of an instance as the read side shows it: desired (name, role) with what the engine reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// its name
    pub name: String,
    /// its role
    pub role: String,
    /// applied, pending or error
    pub state: UserState,
    /// the engine's reason, in the error state
    pub reason: Option<String>,
}

/// The users of an instance (`users`, as the aggregate keeps them) with their state from its cluster's
/// last report (`observed`): applied once the report has the user at its generation (its creation or its
/// last password rotation), error while the engine says it cannot apply it, pending otherwise.
pub fn user_views(
    users: &[domain::instance::users::User],
    observed: Option<&ObservedState>,
) -> Vec<UserView> {
    let reported = observed.and_then(|o| o.users.as_ref());
    users
        .iter()
        .map(|user| {
            let seen = reported.into_iter().flatten().find(|u| u.name == user.name);
            let (state, reason) = match seen {
                Some(seen) if seen.generation >= user.generation => (UserState::Applied, None),
                Some(seen) if seen.reason.is_some() => (UserState::Error, seen.reason.clone()),
                _ => (UserState::Pending, None),
            };
            UserView { name: user.name.clone(), role: user.role.clone(), state, reason }
        })
        .collect()
}

impl InstanceView {
    /// The instance's users with their state (see [`user_views`]).
    pub fn users(&self) -> Vec<UserView> {
        user_views(&self.spec().users, self.observed.as_ref())
    }
}

impl InstanceView {
    pub(super) fn new(time: DateTime<Utc>) -> Self {
        let inputs = Inputs {
            generation: 0,
            changed: Generations::default(),
            restart_pending: &BTreeSet::new(),
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
            changed: Generations::default(),
            restart_pending: BTreeSet::new(),
            deprovisioning: None,
            removed: false,
            observed: None,
            observed_at: None,
            last_drift: None,
            status: status::compute(inputs, None, time),
            migration_target: None,
            migration_started_at: None,
            migration_failed_at: None,
            left: None,
        }
    }

    /// What a migration event changes beside the aggregate; whether it completed one.
    fn fold_migration(&mut self, event: &InstanceEvent, time: DateTime<Utc>) -> bool {
        match event {
            InstanceEvent::MigrationStarted { .. } => {
                self.migration_target = None;
                self.migration_started_at = Some(time);
            }
            InstanceEvent::MigrationCompleted { from, .. } => {
                self.migration_started_at = None;
                // The copy serves: what its cluster reported is the instance's observed state now.
                self.observed = self.migration_target.take().or(self.observed.take());
                self.left = Some(LeftCluster { cluster: from.clone(), removed: false });
                return true;
            }
            InstanceEvent::MigrationFailed { to, target_placed, .. } => {
                self.migration_target = None;
                self.migration_started_at = None;
                self.migration_failed_at = Some(time);
                if *target_placed {
                    self.left = Some(LeftCluster { cluster: to.clone(), removed: false });
                }
            }
            _ => {}
        }
        false
    }

    pub(super) fn fold_events(&mut self, events: Vec<InstanceEvent>, batch: &EventBatch, sequence: u64) {
        let generation = batch.last_version();
        for (aspect, version) in changed_aspects(&events, batch.first_version) {
            self.changed.set(aspect, version);
        }
        for event in events {
            if let InstanceEvent::ConfigurationChanged { restart, .. } = &event {
                self.restart_pending.extend(restart.iter().cloned());
            }
            if let InstanceEvent::DeprovisioningStarted {} = &event {
                self.deprovision_operation = Some(batch.metadata.command_id);
                self.deprovisioning = Some(generation);
            }
            let completed = self.fold_migration(&event, batch.metadata.time);
            self.instance.apply(event);
            if completed {
                // The copy's restore, at the version that placed it, is what the target reports applied.
                self.changed.restore = self.instance.generations().restore;
            }
        }
        let time = batch.metadata.time;
        self.version = generation;
        self.refresh_status(time);
        self.sequence = sequence;
        self.messages += 1;
        self.updated_at = time;
    }
}

//! Version rollouts across the fleet: the roller, on the leading projector, holds each announced
//! rollout's upgrade (`HoldVersionUpgrade`) for every active instance of its service running its
//! `from_version`, conditional on the instance's version as the read models show it (a concurrent change
//! wins; the next pass looks again). The maintenance scheduler then applies what is held in each
//! instance's window, or the customer applies it now. Progress is read from the instances, never
//! stored: what each holds, which rollout gave it the version it runs (`InstanceSpec::rolled_out`) and
//! what its cluster reports running. Like the maintenance scheduler it is handed the time, so tests drive
//! it with a clock of their own.
//!
//! A rollout stands: an instance provisioned at `from_version` later is held too. An instance holding
//! another rollout's upgrade is left to that one (newest rollouts pass first), so two rollouts never take
//! an instance from each other.

use chrono::{DateTime, Utc};
use domain::{InstanceCommand, Lifecycle, OperationKind};
use streams::{
    CommandMetadata,
    instances::InstanceCommands,
    rollouts::{Rollout, Rollouts},
};
use uuid::Uuid;

use crate::{Health, ReadModel, ReadModels, instances::InstanceView};

/// The actor recorded on the upgrades the roller holds.
pub const ACTOR: &str = "rollout";

/// Where one instance is in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// runs `from_version`; the roller has not held the upgrade yet
    Waiting,
    /// holds the upgrade for its window
    Held,
    /// the upgrade is applied; its cluster does not report running `to_version` yet
    Upgrading,
    /// its cluster reports running `to_version`
    Applied,
    /// the upgrade is applied and its cluster reports a failure
    Failed,
}

impl Step {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Held => "held",
            Self::Upgrading => "upgrading",
            Self::Applied => "applied",
            Self::Failed => "failed",
        }
    }
}

/// One instance a rollout targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// its project
    pub project: String,
    /// its id
    pub instance_id: Uuid,
    /// where it is
    pub step: Step,
    /// when the held upgrade is applied: the window's next opening (or its opening, while open)
    pub scheduled_for: Option<DateTime<Utc>>,
    /// what its cluster reports, once failed
    pub reason: Option<String>,
}

/// Where `view` is in `rollout`, at `now`; `None` when the rollout does not concern it.
pub fn step(rollout: &Rollout, view: &InstanceView, now: DateTime<Utc>) -> Option<Target> {
    let spec = view.spec();
    let target = |step, scheduled_for, reason| Target {
        project: spec.project.clone(),
        instance_id: spec.id,
        step,
        scheduled_for,
        reason,
    };
    if spec.service != rollout.service || view.removed {
        return None;
    }
    if spec.pending_maintenance.version.as_ref().is_some_and(|v| v.rollout == rollout.id) {
        return Some(target(Step::Held, spec.maintenance_window.next_opening(now), None));
    }
    if spec.rolled_out.as_ref().is_some_and(|v| v.rollout == rollout.id) {
        let running = view.observed.as_ref().and_then(|o| o.running_version.as_deref());
        return Some(if view.status.state == Health::Error {
            target(Step::Failed, None, view.status.reason.clone())
        } else if running == Some(rollout.to_version.as_str()) && view.status.state == Health::Healthy {
            target(Step::Applied, None, None)
        } else {
            target(Step::Upgrading, None, None)
        });
    }
    waiting(rollout, view).then(|| target(Step::Waiting, None, None))
}

/// Whether the roller is to hold `rollout`'s upgrade for `view`.
fn waiting(rollout: &Rollout, view: &InstanceView) -> bool {
    let spec = view.spec();
    view.instance.lifecycle() == Lifecycle::Active
        && spec.service == rollout.service
        && spec.version == rollout.from_version
        && spec.pending_maintenance.version.is_none()
        && spec.migration.is_none()
}

/// Every instance `rollout` concerns, by project and id.
pub fn progress(model: &ReadModel, rollout: &Rollout, now: DateTime<Utc>) -> Vec<Target> {
    let mut targets: Vec<Target> = model.all_instances().filter_map(|v| step(rollout, v, now)).collect();
    targets.sort_by(|a, b| (&a.project, a.instance_id).cmp(&(&b.project, b.instance_id)));
    targets
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// upgrades held
    pub held: usize,
    /// commands refused or lost to a concurrent change (looked at again next pass)
    pub failed: usize,
}

/// The roller: the rollouts it follows, the read models it looks at and the commands it runs.
#[derive(Debug)]
pub struct Roller {
    models: ReadModels,
    commands: InstanceCommands,
    rollouts: Rollouts,
}

impl Roller {
    /// A roller over `models` and `rollouts`, holding upgrades through `commands`.
    pub fn new(models: ReadModels, commands: InstanceCommands, rollouts: Rollouts) -> Self {
        Self { models, commands, rollouts }
    }

    /// One pass over every rollout, newest first.
    pub async fn pass(&self) -> Pass {
        let mut pass = Pass::default();
        let rollouts = match self.rollouts.list().await {
            Ok(rollouts) => rollouts,
            Err(e) => {
                tracing::info!(error = %e, "rollouts unreadable; retrying");
                return pass;
            }
        };
        for rollout in rollouts {
            let due: Vec<(String, Uuid, u64)> = self
                .models
                .read()
                .all_instances()
                .filter(|view| waiting(&rollout, view))
                .map(|view| (view.spec().project.clone(), view.spec().id, view.version))
                .collect();
            for (project, instance, version) in due {
                let actor = format!("{ACTOR}:{}", rollout.id);
                let metadata = CommandMetadata::new(OperationKind::Update, &actor);
                let command = InstanceCommand::HoldVersionUpgrade {
                    to: rollout.to_version.clone(),
                    rollout: rollout.id,
                };
                match self.commands.execute(&project, instance, command, Some(version), metadata).await {
                    Ok(committed) if !committed.events.is_empty() => pass.held += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::info!(%instance, rollout = %rollout.id, error = %e, "holding an upgrade failed");
                        pass.failed += 1;
                    }
                }
            }
        }
        pass
    }

    /// Passes every `period` until cancelled.
    pub async fn run(self, period: std::time::Duration) {
        loop {
            let pass = self.pass().await;
            if pass != Pass::default() {
                tracing::info!(?pass, "rollouts");
            }
            tokio::time::sleep(period).await;
        }
    }
}

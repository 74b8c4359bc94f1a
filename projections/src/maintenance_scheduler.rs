//! The maintenance scheduler: applies what is held for an instance's maintenance window once the window
//! is open. Restart-mode configuration changes asked outside the window are held in the aggregate (the
//! desired state the cluster's agent reads keeps the configuration it runs); at each pass, for every
//! active instance holding something whose window is open at the time it is handed, it runs
//! `ApplyMaintenance` with the window as trigger and `maintenance-scheduler` as actor, conditional on the
//! instance's version as the read models show it (a concurrent change wins and the next pass tries
//! again). It is handed the time, so tests drive it with a clock of their own.
//!
//! A window passes by only while it is open: if no scheduler runs for the whole of it, what is held waits
//! for the next one (applying it later would restart the service outside the time the customer agreed
//! to). Running twice is harmless: once applied nothing is held, and a second `ApplyMaintenance` changes
//! nothing.

use chrono::{DateTime, Utc};
use domain::{InstanceCommand, Lifecycle, instance::maintenance::MaintenanceTrigger};
use streams::{CommandMetadata, instances::InstanceCommands};
use uuid::Uuid;

use crate::{OperationKind, ReadModel, ReadModels};

/// The actor recorded on what the scheduler applies.
pub const ACTOR: &str = "maintenance-scheduler";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// instances whose held maintenance was applied
    pub applied: usize,
    /// commands that failed or lost to a concurrent change (retried next pass)
    pub failed: usize,
}

/// The instances holding maintenance whose window is open at `now`: project, id and the version read.
pub fn due(model: &ReadModel, now: DateTime<Utc>) -> Vec<(String, Uuid, u64)> {
    model
        .all_instances()
        .filter(|view| view.instance.lifecycle() == Lifecycle::Active)
        .filter(|view| {
            let spec = view.spec();
            !spec.pending_maintenance.is_empty() && spec.maintenance_window.is_open(now)
        })
        .map(|view| (view.spec().project.clone(), view.spec().id, view.version))
        .collect()
}

/// The scheduler: the read models it looks at and the commands it runs.
#[derive(Debug)]
pub struct Scheduler {
    models: ReadModels,
    commands: InstanceCommands,
}

impl Scheduler {
    /// A scheduler over `models`, applying through `commands`.
    pub fn new(models: ReadModels, commands: InstanceCommands) -> Self {
        Self { models, commands }
    }

    /// One pass at `now`.
    pub async fn pass(&self, now: DateTime<Utc>) -> Pass {
        let due = due(&self.models.read(), now);
        let mut pass = Pass::default();
        for (project, instance, version) in due {
            let metadata = CommandMetadata::new(OperationKind::ApplyMaintenance, ACTOR);
            let command = InstanceCommand::ApplyMaintenance { trigger: MaintenanceTrigger::Window };
            match self.commands.execute(&project, instance, command, Some(version), metadata).await {
                Ok(committed) if !committed.events.is_empty() => pass.applied += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(%instance, error = %e, "applying held maintenance failed; retrying");
                    pass.failed += 1;
                }
            }
        }
        pass
    }

    /// Passes every `period` on the system clock until cancelled.
    pub async fn run(self, period: std::time::Duration) {
        loop {
            let pass = self.pass(Utc::now()).await;
            if pass != Pass::default() {
                tracing::info!(?pass, "maintenance windows");
            }
            tokio::time::sleep(period).await;
        }
    }
}

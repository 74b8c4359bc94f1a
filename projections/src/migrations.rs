//! The migrator: the process manager of moves between clusters (`domain::instance::migration`). At each
//! pass it looks at the read models and takes every move in progress one step further, then starts the
//! moves that draining clusters call for. Every step is a command on the instance (or on its backup),
//! recorded with its actor, so a restart of the leading projector resumes each move where its events
//! left it; a step that loses to a concurrent change is taken again at the next pass.
//!
//! A move's steps:
//! * no backup yet: ask for it (`BackupCommand::Request`, trigger `migration`, under the id the move
//!   recorded, so asking twice changes nothing);
//! * the backup completed and verified (`backup_worker`): place the copy (`PlaceMigrationTarget`); failed,
//!   deleted or not as its cluster reported: give the move up;
//! * the copy reported ready with the backup loaded at the placing version: complete; the copy failed:
//!   give the move up. The source serves all along.
//!
//! A move not completed [`DEFAULT_TIMEOUT`] (`cp-projector run --migration-timeout-minutes`) after it began
//! is given up, as is one a platform admin cancels (`DELETE …/instances/{id}/migration`): a silent target
//! must not hold the instance from every change for ever.
//!
//! A draining cluster's active instances that are not moving are started towards the placeable cluster
//! of their region that placement picks for them (`domain::placement`, the drained cluster excluded), as
//! many at a time as the drain allows.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use domain::{
    BackupCommand, BackupSource, BackupTrigger, InstanceCommand, Lifecycle, backup::InstanceFacts,
    instance::migration::Migration, observed::ObservedPhase, placement,
};
use streams::{
    CommandMetadata, backups::BackupCommands, clusters::ClusterRegistry, instances::InstanceCommands,
};
use uuid::Uuid;

use crate::{BackupState, InstanceView, OperationKind, ReadModel, ReadModels};

/// The actor recorded on the steps the migrator takes.
pub const ACTOR: &str = "migrator";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// moves started by drains
    pub started: usize,
    /// steps taken (backups asked for, copies placed, moves completed or given up)
    pub stepped: usize,
    /// instances on a draining cluster with no other placeable cluster in their region
    pub stuck: usize,
    /// instances on a draining cluster whose last move was given up less than [`DRAIN_RETRY_AFTER`] ago
    pub backing_off: usize,
    /// steps refused or lost to a concurrent change (taken again next pass)
    pub failed: usize,
}

/// One step a move in progress takes next.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    AskBackup(BackupSource, InstanceFacts),
    Place(domain::instance::restore::RestoreSource),
    Complete,
    GiveUp(String),
}

/// How long a move may take, by default, before the migrator gives it up: a backup and a restore of the
/// largest plan, with room; a move stuck longer (its target silent, its copy never ready) would keep the
/// instance from every change.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// How long a drain leaves an instance whose move was given up before it starts another: a move that fails
/// for a lasting reason (its backups fail) would otherwise be started again at every pass, each attempt
/// a few events in the instance's history.
pub const DRAIN_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The step `view`'s move takes next at `now`, if any (`None`: waiting for its backup or its copy).
fn next_step(
    model: &ReadModel,
    view: &InstanceView,
    migration: &Migration,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Step> {
    if deadline.is_some_and(|d| now >= d) {
        return Some(Step::GiveUp(format!(
            "the move did not complete within its time limit (started {})",
            view.migration_started_at.map_or_else(|| "at an unknown time".into(), |t| t.to_rfc3339())
        )));
    }
    let spec = view.spec();
    let Some(target) = &migration.target else {
        let Some(backup) = model.backups().get(&spec.project, migration.backup_id) else {
            return Some(Step::AskBackup(
                BackupSource::of(spec),
                InstanceFacts {
                    lifecycle: view.instance.lifecycle(),
                    ever_ready: view.observed.as_ref().is_some_and(|o| o.observed_generation.is_some()),
                },
            ));
        };
        return match (backup.state, backup.verified) {
            (BackupState::Completed, Some(true)) => {
                model.backups().restore_source(&spec.project, backup.id).map(Step::Place)
            }
            (BackupState::Completed, Some(false))
            | (BackupState::Failed | BackupState::Deleting | BackupState::Deleted, _) => {
                let why = model
                    .backups()
                    .restore_source(&spec.project, backup.id)
                    .and_then(|s| s.unusable)
                    .unwrap_or_else(|| "it cannot be restored from".into());
                Some(Step::GiveUp(format!("the migration's backup {} is unusable: {why}", backup.id)))
            }
            _ => None,
        };
    };
    let copy = view.migration_target.as_ref()?;
    let restored = copy.applied.is_some_and(|a| a.restore >= target.generation);
    let ready = copy.phase == ObservedPhase::Ready
        && copy.observed_generation.is_some_and(|g| g >= target.generation);
    if ready && restored {
        return Some(Step::Complete);
    }
    if copy.phase == ObservedPhase::Failed && copy.desired_generation >= target.generation {
        let why = copy.reason.clone().unwrap_or_else(|| "the copy failed".into());
        return Some(Step::GiveUp(format!("the copy on {} failed: {why}", migration.to)));
    }
    None
}

/// The migrator: the read models it looks at, the registry of clusters, the commands it runs.
#[derive(Debug)]
pub struct Migrator {
    models: ReadModels,
    clusters: ClusterRegistry,
    instances: InstanceCommands,
    backups: BackupCommands,
    timeout: Duration,
}

impl Migrator {
    /// A migrator over `models` and `clusters`, stepping through `instances` and `backups`.
    pub fn new(
        models: ReadModels,
        clusters: ClusterRegistry,
        instances: InstanceCommands,
        backups: BackupCommands,
    ) -> Self {
        Self { models, clusters, instances, backups, timeout: DEFAULT_TIMEOUT }
    }

    /// Gives up moves not completed `timeout` after they started instead of [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One pass at `now`: every move in progress one step further, then the drains' new moves.
    pub async fn pass(&self, now: DateTime<Utc>) -> Pass {
        let timeout = TimeDelta::from_std(self.timeout).unwrap_or(TimeDelta::MAX);
        let mut pass = Pass::default();
        let steps: Vec<(String, Uuid, u64, Migration, Step)> = {
            let model = self.models.read();
            model
                .all_instances()
                .filter_map(|view| {
                    let migration = view.instance.migration()?.clone();
                    let deadline = view.migration_started_at.and_then(|t| t.checked_add_signed(timeout));
                    let step = next_step(&model, view, &migration, deadline, now)?;
                    Some((view.spec().project.clone(), view.spec().id, view.version, migration, step))
                })
                .collect()
        };
        for (project, instance, version, migration, step) in steps {
            let ok = self.take(&project, instance, version, &migration, step).await;
            if ok { pass.stepped += 1 } else { pass.failed += 1 }
        }
        self.drain(&mut pass, now).await;
        pass
    }

    async fn take(
        &self,
        project: &str,
        instance: Uuid,
        version: u64,
        migration: &Migration,
        step: Step,
    ) -> bool {
        let metadata = || CommandMetadata::new(OperationKind::Migrate, ACTOR);
        let migration_id = migration.id;
        let command = match step {
            Step::AskBackup(source, facts) => {
                let command = BackupCommand::Request {
                    source,
                    trigger: BackupTrigger::Migration { migration_id },
                    instance: facts,
                };
                let mut backup_metadata = CommandMetadata::new(OperationKind::Backup, ACTOR);
                backup_metadata.command_id = migration.backup_id;
                let backup = migration.backup_id;
                let asked = self.backups.execute(project, instance, backup, command, backup_metadata).await;
                return match asked {
                    Ok(_) => true,
                    Err(streams::ExecuteError::Rejected(e)) => {
                        // The backup cannot be taken (e.g. the instance never served): the move cannot be made.
                        let reason = format!("the migration's backup could not be taken: {e}");
                        let give_up = InstanceCommand::FailMigration { migration_id, reason };
                        self.instances.execute(project, instance, give_up, None, metadata()).await.is_ok()
                    }
                    Err(e) => {
                        tracing::info!(%instance, error = %e, "asking for a migration's backup failed; retrying");
                        false
                    }
                };
            }
            Step::Place(source) => InstanceCommand::PlaceMigrationTarget { migration_id, source },
            Step::Complete => InstanceCommand::CompleteMigration { migration_id },
            Step::GiveUp(reason) => {
                tracing::warn!(%instance, %migration_id, %reason, "migration given up; the instance stays where it was");
                InstanceCommand::FailMigration { migration_id, reason }
            }
        };
        match self.instances.execute(project, instance, command, Some(version), metadata()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(%instance, %migration_id, error = %e, "a migration step did not land; retrying");
                false
            }
        }
    }

    /// Starts the moves draining clusters call for, up to each drain's parallelism.
    async fn drain(&self, pass: &mut Pass, now: DateTime<Utc>) {
        let retry_after = TimeDelta::from_std(DRAIN_RETRY_AFTER).unwrap_or(TimeDelta::MAX);
        let backing_off = |v: &InstanceView| v.migration_failed_at.is_some_and(|at| now < at + retry_after);
        let all = self.clusters.list();
        let placeable = self.clusters.placeable();
        for cluster in &all {
            let Some(drain) = self.clusters.fleet_state(&cluster.name).drain else { continue };
            let targets: Vec<_> = placeable
                .iter()
                .filter(|c| c.region == cluster.region && c.name != cluster.name)
                .cloned()
                .collect();
            let (moving, waiting) = {
                let model = self.models.read();
                let on_it: Vec<&InstanceView> = model
                    .all_instances()
                    .filter(|v| {
                        v.spec().cluster == cluster.name && v.instance.lifecycle() == Lifecycle::Active
                    })
                    .collect();
                let moving = on_it.iter().filter(|v| v.instance.migration().is_some()).count();
                pass.backing_off +=
                    on_it.iter().filter(|v| v.instance.migration().is_none() && backing_off(v)).count();
                let waiting: Vec<(String, Uuid, String, u64)> = on_it
                    .iter()
                    .filter(|v| v.instance.migration().is_none() && !backing_off(v))
                    .map(|v| (v.spec().project.clone(), v.spec().id, v.spec().name.clone(), v.version))
                    .collect();
                (moving, waiting)
            };
            let room = (drain.parallel as usize).saturating_sub(moving);
            for (project, instance, name, version) in waiting.into_iter().take(room) {
                let Some(to) = placement::place(&targets, Some(&cluster.region), &project, &name) else {
                    pass.stuck += 1;
                    continue;
                };
                let command = InstanceCommand::StartMigration {
                    migration_id: Uuid::now_v7(),
                    to: to.name.clone(),
                    backup_id: Uuid::now_v7(),
                };
                let metadata = CommandMetadata::new(OperationKind::Migrate, &drain.actor);
                match self.instances.execute(&project, instance, command, Some(version), metadata).await {
                    Ok(_) => pass.started += 1,
                    Err(e) => {
                        tracing::info!(%instance, error = %e, "starting a drain's migration failed; retrying");
                        pass.failed += 1;
                    }
                }
            }
        }
    }

    /// Passes every `period` until cancelled.
    pub async fn run(self, period: std::time::Duration) {
        loop {
            let pass = self.pass(Utc::now()).await;
            if pass != Pass::default() {
                tracing::info!(?pass, "migrations");
            }
            tokio::time::sleep(period).await;
        }
    }
}

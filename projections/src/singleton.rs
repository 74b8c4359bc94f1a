//! The work of the leading projector replica (`cp-projector run` hands it to [`crate::leader::lead`]):
//! the fold, the intake gate, the liveness watch, the backup and maintenance schedulers, and with a backup
//! store the backup worker and the store keys' service. Started anew each time the replica takes the lease; tests
//! run the same work.

use std::time::Duration;

use backup_store::{BackupStore, access::AccessAdmin};
use chrono::{TimeDelta, Utc};
use streams::{Topology, clusters::ClusterRegistry, read_models::ReadModelBucket};

use crate::{
    Projector, ProjectorMetrics, ReadModels,
    intake::{IntakeLimits, IntakeMetrics},
    store_access::StoreAccessMetrics,
};

/// How often, by default, the backup scheduler looks at the schedules.
pub const SCHEDULER_PERIOD: Duration = Duration::from_secs(15);

/// How often the migrator takes the moves in progress a step further: each step waits for a backup or
/// a copy that takes minutes, so seconds of delay cost nothing.
pub const MIGRATOR_PERIOD: Duration = Duration::from_secs(5);

/// Everything the leader's work needs; cloned into each term of leadership.
#[derive(Clone)]
pub struct Singleton {
    /// the control plane's streams and buckets
    pub topology: Topology,
    /// the read models, as an API replica sees them (the scheduler and the worker read them)
    pub models: ReadModels,
    /// the connection (the store keys' service answers on it)
    pub client: async_nats::Client,
    /// the backup store and an administrator of its identities; without, backups are neither verified nor
    /// deleted and no instance gets keys
    pub store: Option<(BackupStore, AccessAdmin)>,
    /// the fold's metrics
    pub metrics: ProjectorMetrics,
    /// the intake gate's metrics
    pub intake_metrics: IntakeMetrics,
    /// the store keys' metrics
    pub access_metrics: StoreAccessMetrics,
    /// registered clusters (whose intakes the gate drains)
    pub clusters: ClusterRegistry,
    /// the intake gate's rate per cluster
    pub limits: IntakeLimits,
    /// how long a cluster may be silent before it counts as unreachable
    pub cluster_silence: Duration,
    /// how long a deprovisioned instance's backups stay
    pub retention_after_deprovision: TimeDelta,
    /// how often the scheduler looks at the schedules
    pub scheduler_period: Duration,
    /// how long a move between clusters may take before the migrator gives it up
    pub migration_timeout: Duration,
}

impl std::fmt::Debug for Singleton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singleton").field("scheduler_period", &self.scheduler_period).finish_non_exhaustive()
    }
}

impl Singleton {
    /// How far back a new term's scheduler looks for due backups: the previous leader may have died just
    /// before a due time and passed last a scheduler period before it, and the lease outlived it by its
    /// time to live. What the previous leader did ask for in that window is asked again under the same
    /// id, which changes nothing (`backup_scheduler`); without the look-back, a time due during the
    /// handover would get no backup at all.
    pub fn scheduler_look_back(&self) -> Duration {
        self.scheduler_period + self.topology.settings.lease_ttl + crate::leader::POLL * 2
    }

    /// One term's work; ends only if one of its tasks does (the leader then gives the lease up).
    pub fn run(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let this = self.clone();
        async move {
            let Self {
                topology,
                models,
                client,
                store,
                metrics,
                intake_metrics,
                access_metrics,
                clusters,
                limits,
                cluster_silence,
                retention_after_deprovision,
                scheduler_period,
                migration_timeout,
            } = this.clone();
            let mut tasks = tokio::task::JoinSet::new();
            let backups =
                streams::backups::BackupCommands::new(&topology, streams::instances::DEFAULT_CACHE_CAPACITY);
            let look_back = TimeDelta::from_std(this.scheduler_look_back()).unwrap_or(TimeDelta::zero());
            let scheduler =
                crate::backup_scheduler::Scheduler::new(models.clone(), backups, Utc::now() - look_back)
                    .retention_after_deprovision(retention_after_deprovision);
            tasks.spawn(scheduler.run(scheduler_period));
            // Held maintenance, applied once an instance's window is open (`maintenance_scheduler`).
            let instances = streams::instances::InstanceCommands::new(
                &topology,
                streams::instances::DEFAULT_CACHE_CAPACITY,
            );
            tasks.spawn(
                crate::maintenance_scheduler::Scheduler::new(models.clone(), instances.clone())
                    .run(scheduler_period),
            );
            // Version rollouts, held for each instance's window (`rollouts`).
            let rollouts = streams::rollouts::Rollouts::new(&topology);
            let roller = crate::rollouts::Roller::new(models.clone(), instances.clone(), rollouts);
            tasks.spawn(roller.run(scheduler_period));
            // Moves between clusters, and the drains that start them (`migrations`).
            let migration_backups =
                streams::backups::BackupCommands::new(&topology, streams::instances::DEFAULT_CACHE_CAPACITY);
            let migrator = crate::migrations::Migrator::new(
                models.clone(),
                clusters.clone(),
                instances,
                migration_backups,
            )
            .timeout(migration_timeout);
            tasks.spawn(migrator.run(MIGRATOR_PERIOD));
            if let Some((store, admin)) = store {
                // Agents' requests for an instance's keys, and the end of those keys.
                let instances = streams::instances::InstanceCommands::new(
                    &topology,
                    streams::instances::DEFAULT_CACHE_CAPACITY,
                );
                let serve =
                    crate::store_access::serve(client, instances, admin.clone(), access_metrics.clone());
                tasks.spawn(async move {
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "answering backup store key requests failed");
                    }
                });
                tasks.spawn(crate::store_access::revoke_inactive(models.clone(), admin, access_metrics));
                tasks.spawn(crate::backup_worker::run(models, store, topology.jetstream.clone()));
            }
            tasks.spawn(crate::intake::run(
                topology.jetstream.clone(),
                topology.settings.clone(),
                clusters,
                limits,
                intake_metrics,
            ));
            tasks.spawn(crate::liveness::watch(
                streams::liveness::LivenessBucket::new(&topology),
                cluster_silence,
            ));
            let (checkpoint, _) = tokio::sync::watch::channel(0);
            tasks.spawn(
                Projector::new(topology.events.clone(), ReadModelBucket::new(&topology), metrics)
                    .parking_skipped(topology.jetstream.clone())
                    .run(checkpoint),
            );
            tasks.join_next().await;
        }
    }
}

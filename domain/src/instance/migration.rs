//! Moving an instance to another cluster of its region (a platform admin's migration, or a drain).
//!
//! A move is four steps, each a command on the instance and an event in its history, driven by
//! `projections::migrations` so that a restart resumes it:
//! 1. `StartMigration`: the instance records where it goes and the id of the backup the move is made
//!    from. It keeps serving where it is; every other change is refused until the move ends.
//! 2. `PlaceMigrationTarget`: once that backup completed and was verified, a copy of the instance is
//!    placed on the target cluster, restored from it (PostgreSQL: CloudNativePG bootstraps a new cluster
//!    from the backup, archiving under a server name of its own so it never writes into the WAL archive
//!    the source still writes).
//! 3. `CompleteMigration`: once the copy serves with the backup loaded, the instance lives on the target
//!    and the source cluster removes its objects.
//! 4. `FailMigration` instead, at any step: the copy (if any) is removed and the instance keeps serving
//!    where it was.
//!
//! **Where each message goes.** An instance's subject names its cluster (`cp.evt.<cluster>.…`) and a
//! cluster's agent reads only its own subjects, so each message is published on the subject of the
//! cluster that must act on it ([`Instance::message_cluster`]): placing the copy on the target's, the
//! completion on the source's (which removes its objects), a failure after placing on the target's (which
//! removes the copy). Each agent reads the last message of its subject through [`Instance::on_cluster`]:
//! the instance it serves, the copy it restores, or nothing (its objects go).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Instance, InstanceError, InstanceEvent, restore::RestoreSpec};
use crate::catalog::ServiceType;

/// A move in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// the move's id
    pub id: Uuid,
    /// the cluster it serves on until the move completes
    pub from: String,
    /// the cluster it moves to
    pub to: String,
    /// the backup it is restored from on the target
    pub backup_id: Uuid,
    /// once placed: the copy on the target
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MigrationTarget>,
}

/// The copy of an instance on its migration's target cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationTarget {
    /// what it is restored from: the migration's backup of the instance itself
    pub restore: RestoreSpec,
    /// PostgreSQL: the server name the copy archives under, so it never writes into the archive of the
    /// source, which keeps serving (and archiving) until the move completes
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_server: Option<String>,
    /// the instance version that placed it: the copy's restore generation
    pub generation: u64,
}

/// Checks a move to `to` of an instance on `from`.
pub(super) fn check_start(from: &str, to: &str) -> Result<(), InstanceError> {
    super::check_dns_label("cluster", to)?;
    if from == to {
        return Err(super::rules::invalid(
            "/cluster",
            "other_cluster",
            format!("the instance already runs on {to}: name another cluster of its region"),
        ));
    }
    Ok(())
}

/// The migration `id` in progress, or why there is none.
pub(super) fn current(migration: Option<&Migration>, id: Uuid) -> Result<&Migration, InstanceError> {
    match migration {
        Some(m) if m.id == id => Ok(m),
        _ => Err(InstanceError::NoSuchMigration { id }),
    }
}

/// The server name a PostgreSQL copy archives under: the instance's name and the move's, so that every
/// move gets an empty archive: before a new cluster's first archive, CloudNativePG's Barman Cloud
/// tooling runs `barman-cloud-check-wal-archive`, which "will pass if the WAL archive is empty ... All
/// other conditions will result in failure" (barman `doc/barman-cloud-check-wal-archive.1.md`, 3.5).
pub(super) fn archive_server(service: ServiceType, name: &str, migration: Uuid) -> Option<String> {
    let short: String = migration.simple().to_string().chars().take(8).collect();
    (service == ServiceType::Postgresql).then(|| format!("{name}-m{short}"))
}

impl Instance {
    pub(super) fn start_migration(
        &self,
        migration_id: Uuid,
        to: String,
        backup_id: Uuid,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        if let Some(m) = &spec.migration {
            // A retried start of the same move changes nothing.
            return if m.id == migration_id {
                Ok(vec![])
            } else {
                Err(InstanceError::Migrating { to: m.to.clone() })
            };
        }
        check_start(&spec.cluster, &to)?;
        Ok(vec![InstanceEvent::MigrationStarted { migration_id, from: spec.cluster.clone(), to, backup_id }])
    }

    pub(super) fn place_migration_target(
        &self,
        migration_id: Uuid,
        source: &super::restore::RestoreSource,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        let migration = current(spec.migration.as_ref(), migration_id)?;
        if migration.target.is_some() {
            return Ok(vec![]);
        }
        if source.backup_id != migration.backup_id || source.instance_id != spec.id {
            return Err(InstanceError::BackupNotRestorable {
                backup_id: source.backup_id,
                reason: "it is not the backup this migration is made from".into(),
            });
        }
        let restore = super::restore::check(source, spec.service, &spec.version)?;
        Ok(vec![InstanceEvent::MigrationTargetPlaced {
            migration_id,
            restore,
            archive_server: archive_server(spec.service, &spec.name, migration_id),
        }])
    }

    pub(super) fn complete_migration(&self, migration_id: Uuid) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        let migration = current(spec.migration.as_ref(), migration_id)?;
        if migration.target.is_none() {
            return Err(super::rules::invalid(
                "/migration",
                "target_placed",
                "the copy on the target cluster has not been placed yet",
            ));
        }
        Ok(vec![InstanceEvent::MigrationCompleted {
            migration_id,
            from: migration.from.clone(),
            to: migration.to.clone(),
        }])
    }

    pub(super) fn fail_migration(
        &self,
        migration_id: Uuid,
        reason: String,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        let migration = current(spec.migration.as_ref(), migration_id)?;
        Ok(vec![InstanceEvent::MigrationFailed {
            migration_id,
            from: migration.from.clone(),
            to: migration.to.clone(),
            reason,
            target_placed: migration.target.is_some(),
        }])
    }

    /// Whether a move ever began: the instance's messages may then be on several clusters' subjects, so
    /// a write must be checked against its last message on any of them.
    pub fn has_moved(&self) -> bool {
        !self.clusters_moved_between.is_empty()
    }

    /// Every cluster the instance's messages and its clusters' facts about it may be on: where it runs and
    /// every cluster a move involved, sorted.
    pub fn clusters_involved(&self) -> Vec<String> {
        let mut clusters = self.clusters_moved_between.clone();
        if let Some(spec) = &self.spec {
            clusters.push(spec.cluster.clone());
        }
        clusters.sort();
        clusters.dedup();
        clusters
    }

    /// The move in progress, if any.
    pub fn migration(&self) -> Option<&Migration> {
        self.spec.as_ref().and_then(|s| s.migration.as_ref())
    }

    /// The cluster whose agent must see the message carrying `events` (applied to `self` already): see
    /// the module's documentation. `None` before provisioning.
    pub fn message_cluster<'a>(&'a self, events: &'a [InstanceEvent]) -> Option<&'a str> {
        for event in events.iter().rev() {
            match event {
                InstanceEvent::MigrationTargetPlaced { .. } => {
                    return self.migration().map(|m| m.to.as_str());
                }
                InstanceEvent::MigrationCompleted { from, .. } => return Some(from),
                InstanceEvent::MigrationFailed { to, target_placed: true, .. } => return Some(to),
                _ => {}
            }
        }
        self.spec.as_ref().map(|s| s.cluster.as_str())
    }

    /// The instance as `cluster`'s agent must run it: itself where it serves; on a migration's target
    /// once placed, the copy restored from the migration's backup; `None` anywhere else (what the cluster
    /// holds of it goes).
    pub fn on_cluster(&self, cluster: &str) -> Option<Cow<'_, Instance>> {
        let spec = self.spec.as_ref()?;
        if spec.cluster == cluster {
            return Some(Cow::Borrowed(self));
        }
        let migration = spec.migration.as_ref().filter(|m| m.to == cluster)?;
        let target = migration.target.as_ref()?;
        let mut copy = self.clone();
        copy.place_target(target, cluster);
        Some(Cow::Owned(copy))
    }

    /// [`Self::on_cluster`], with what `cluster` holds of an instance it no longer runs to be removed: the
    /// instance as being deprovisioned there.
    pub fn part_on(&self, cluster: &str) -> Instance {
        match self.on_cluster(cluster) {
            Some(part) => part.into_owned(),
            None => {
                let mut leaving = self.clone();
                leaving.lifecycle = super::Lifecycle::Deprovisioning;
                leaving
            }
        }
    }

    /// Makes this the copy of `target` on `cluster`: what a completed move leaves, and what the target's
    /// agent runs before.
    fn place_target(&mut self, target: &MigrationTarget, cluster: &str) {
        if let Some(spec) = self.spec.as_mut() {
            spec.cluster = cluster.to_owned();
            spec.restore = Some(target.restore.clone());
            if target.archive_server.is_some() {
                spec.archive_server = target.archive_server.clone();
            }
        }
        self.generations.restore = target.generation;
    }

    /// Applies a migration event.
    pub(super) fn apply_migration(&mut self, event: InstanceEvent) {
        let generation = self.generation;
        let Some(spec) = self.spec.as_mut() else { return };
        match event {
            InstanceEvent::MigrationStarted { migration_id, from, to, backup_id } => {
                for cluster in [&from, &to] {
                    if let Err(at) = self.clusters_moved_between.binary_search(cluster) {
                        self.clusters_moved_between.insert(at, cluster.clone());
                    }
                }
                spec.migration = Some(Migration { id: migration_id, from, to, backup_id, target: None });
            }
            InstanceEvent::MigrationTargetPlaced { restore, archive_server, .. } => {
                if let Some(m) = spec.migration.as_mut() {
                    m.target = Some(MigrationTarget { restore, archive_server, generation });
                }
            }
            InstanceEvent::MigrationCompleted { to, .. } => {
                if let Some(target) = spec.migration.take().and_then(|m| m.target) {
                    self.place_target(&target, &to);
                }
            }
            InstanceEvent::MigrationFailed { .. } => spec.migration = None,
            _ => {}
        }
    }
}

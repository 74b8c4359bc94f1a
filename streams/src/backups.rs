//! The Backup aggregate on JetStream: one subject per backup under its instance's,
//! `cp.evt.<cluster>.<project>.<instance-id>.bak.<backup-id>`, so each cluster's agent receives its
//! backups with its instances (`cp.evt.<cluster>.>`), the last message of each subject is the backup's
//! state (what an agent rebuilds from), and a backup outlives its instance.

use domain::{Backup, BackupCommand, BackupError};
use uuid::Uuid;

use crate::{
    envelope::CommandMetadata,
    store::{Committed, ExecuteError, JetStreamStore, StreamAggregate},
    topology::{INSTANCE_EVENT_PREFIX, Topology},
};

impl StreamAggregate for Backup {
    const SNAPSHOT_VERSION: u32 = 1;

    fn partition(&self) -> Option<&str> {
        self.source().map(|source| source.cluster.as_str())
    }
}

/// Token between an instance's id and a backup's id in a backup's subject.
const BACKUP_TOKEN: &str = "bak";

/// Aggregate id of a backup: `<project>.<instance-id>.bak.<backup-id>`.
pub fn aggregate_id(project: &str, instance_id: Uuid, backup_id: Uuid) -> String {
    format!("{project}.{instance_id}.{BACKUP_TOKEN}.{backup_id}")
}

/// Subject of a backup's events.
pub fn backup_subject(cluster: &str, project: &str, instance_id: Uuid, backup_id: Uuid) -> String {
    format!("{INSTANCE_EVENT_PREFIX}.{cluster}.{}", aggregate_id(project, instance_id, backup_id))
}

/// The project, instance and backup a backup's aggregate id names.
pub fn parse_aggregate_id(id: &str) -> Option<(String, Uuid, Uuid)> {
    let mut parts = id.split('.');
    let (project, instance, token, backup) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if token != BACKUP_TOKEN || parts.next().is_some() {
        return None;
    }
    Some((project.to_owned(), instance.parse().ok()?, backup.parse().ok()?))
}

/// Runs backup commands.
#[derive(Clone)]
pub struct BackupCommands {
    store: JetStreamStore<Backup>,
}

impl std::fmt::Debug for BackupCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupCommands").finish_non_exhaustive()
    }
}

impl BackupCommands {
    /// Commands over `topology`, caching up to `cache_capacity` backups.
    pub fn new(topology: &Topology, cache_capacity: usize) -> Self {
        let store = JetStreamStore::new(
            topology.jetstream.clone(),
            topology.events.clone(),
            INSTANCE_EVENT_PREFIX,
            cache_capacity,
            topology.settings.commit_mode,
        );
        Self { store }
    }

    /// Runs `command` on backup `backup_id` of instance `instance_id` of `project`.
    pub async fn execute(
        &self,
        project: &str,
        instance_id: Uuid,
        backup_id: Uuid,
        command: BackupCommand,
        metadata: CommandMetadata,
    ) -> Result<Committed<Backup>, ExecuteError<BackupError>> {
        let id = aggregate_id(project, instance_id, backup_id);
        self.store.execute(&id, command, &(), None, metadata).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_s_subject_lies_under_its_instance_s_and_its_id_parses_back() {
        let (instance, backup) = (Uuid::now_v7(), Uuid::now_v7());
        let subject = backup_subject("eu-1", "acme", instance, backup);
        let instance_subject = crate::instances::instance_subject("eu-1", "acme", instance);
        assert_eq!(subject, format!("{instance_subject}.bak.{backup}"));
        assert_eq!(
            parse_aggregate_id(&aggregate_id("acme", instance, backup)),
            Some(("acme".to_owned(), instance, backup))
        );
        assert_eq!(
            parse_aggregate_id(&format!("acme.{instance}")),
            None,
            "an instance's id is not a backup's"
        );
    }
}

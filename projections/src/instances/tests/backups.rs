//! Folding a backup: from its request and its cluster's facts; it outlives its instance and fails its
//! operation with the cluster's reason.

use super::*;

impl Log {
    /// A backup's command, as the store writes it on the backup's own subject.
    pub(super) fn backup_command(
        &mut self,
        backup: Uuid,
        operation: OperationKind,
        events: Vec<domain::BackupEvent>,
    ) -> Uuid {
        let mut metadata = streams::CommandMetadata::new(operation, "test");
        metadata.time = DateTime::from_timestamp(1_000 + self.messages.len() as i64, 0).unwrap();
        if operation == OperationKind::Backup {
            metadata.command_id = backup;
        }
        let batch = EventBatch {
            aggregate_type: <domain::Backup as Aggregate>::TYPE.to_owned(),
            aggregate_id: streams::backups::aggregate_id("acme", self.id, backup),
            first_version: 1,
            events: EventBatch::encode_events::<domain::Backup>(&events).unwrap(),
            metadata: metadata.clone(),
            snapshot: None,
        };
        let subject = streams::backups::backup_subject("eu-1", "acme", self.id, backup);
        self.messages.push((subject, serde_json::to_vec(&batch).unwrap()));
        metadata.command_id
    }

    pub(super) fn backup_fact(&mut self, event: ObservedEvent) {
        let mut message = ObservedMessage::new("eu-1", "acme", self.id, self.version, event);
        message.time = DateTime::from_timestamp(1_000 + self.messages.len() as i64, 0).unwrap();
        self.messages.push((message.subject(), message.to_vec().unwrap()));
    }
}

pub(super) fn requested(log: &Log) -> domain::BackupEvent {
    domain::BackupEvent::BackupRequested {
        source: domain::BackupSource {
            project: "acme".into(),
            instance_id: log.id,
            instance_name: "db".into(),
            cluster: "eu-1".into(),
            service: ServiceType::Postgresql,
            version: "16".into(),
        },
        trigger: domain::BackupTrigger::Manual,
    }
}

#[test]
fn a_backup_is_folded_from_its_request_and_its_cluster_s_facts_and_outlives_its_instance() {
    let mut log = Log::new();
    log.provision();
    let backup = Uuid::now_v7();
    let operation = log.backup_command(backup, OperationKind::Backup, vec![requested(&log)]);
    assert_eq!(operation, backup, "the operation is the backup");
    log.backup_fact(ObservedEvent::BackupStarted { backup_id: backup });
    let completed = ObservedEvent::BackupCompleted {
        backup_id: backup,
        location: format!("acme/{}/db/base/20261201T013000", log.id),
        size_bytes: 42,
        sha256: None,
        duration_ms: 1500,
    };
    log.backup_fact(completed.clone());
    // A fact reported twice (an agent that died before recording it had reported it) changes nothing.
    log.backup_fact(completed);
    log.command(OperationKind::Deprovision, vec![InstanceEvent::DeprovisioningStarted {}]);
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());

    let view = model.backups().get("acme", backup).expect("the backup");
    assert_eq!(view.state, crate::backups::BackupState::Completed);
    assert_eq!((view.size_bytes, view.duration_ms), (Some(42), Some(1500)));
    assert_eq!(view.requested_at.timestamp(), 1_001);
    assert_eq!(view.started_at.map(|t| t.timestamp()), Some(1_002));
    assert_eq!(view.finished_at.map(|t| t.timestamp()), Some(1_003), "the first report's time");
    assert_eq!(model.operation("acme", backup).map(|op| op.state), Some(OperationState::Succeeded));
    assert_eq!(model.backups().of_instance("acme", log.id, None, None, 10).len(), 1);

    // Stored and loaded back, the records are the same (what an API replica reads).
    let mut writer = ReadModel::default();
    log.fold(&mut writer, 0, log.messages.len());
    let loaded = store(&writer.take_changes(), writer.checkpoint());
    assert_eq!(loaded.backups().get("acme", backup), Some(view));
}

#[test]
fn a_failed_backup_fails_its_operation_with_the_cluster_s_reason() {
    let mut log = Log::new();
    log.provision();
    let backup = Uuid::now_v7();
    log.backup_command(backup, OperationKind::Backup, vec![requested(&log)]);
    log.backup_fact(ObservedEvent::BackupFailed {
        backup_id: backup,
        reason: "BackupJobFailed: disk full".into(),
    });
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    let view = model.backups().get("acme", backup).unwrap();
    assert_eq!(view.state, crate::backups::BackupState::Failed);
    let failed =
        model.backups().of_instance("acme", log.id, Some(crate::backups::BackupState::Failed), None, 10);
    assert_eq!(failed.len(), 1);
    assert!(matches!(
        model.operation("acme", backup).map(|op| op.state),
        Some(OperationState::Failed { reason, .. }) if reason.contains("disk full")
    ));
}

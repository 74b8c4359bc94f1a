//! Facts from clusters are bound to their subject: a fact is applied only when its subject, its payload
//! and the desired state agree (see `crate::facts`); each refusal names its reason.

use super::{backups::requested, *};

impl Log {
    /// A fact as published on `subject`, whatever its payload says.
    pub(super) fn fact_on(&mut self, subject: String, message: &ObservedMessage) {
        self.messages.push((subject, message.to_vec().unwrap()));
    }

    pub(super) fn folded(&self) -> (ReadModel, Vec<Result<bool, String>>) {
        let mut model = ReadModel::default();
        let results = self
            .messages
            .iter()
            .enumerate()
            .map(|(n, (subject, payload))| {
                let stored_at = DateTime::from_timestamp(1_000 + n as i64, 0).unwrap();
                model.apply_message(n as u64 + 1, subject, payload, stored_at).map_err(|e| e.to_string())
            })
            .collect();
        (model, results)
    }
}

fn refusal(result: &Result<bool, String>) -> &str {
    result.as_ref().err().map(String::as_str).unwrap_or("applied")
}

fn removed(log: &Log) -> ObservedMessage {
    ObservedMessage::new(
        "eu-1",
        "acme",
        log.id,
        log.version,
        ObservedEvent::InstanceRemoved { instance_id: log.id },
    )
}

#[test]
fn a_cluster_reporting_an_instance_placed_on_another_cluster_is_refused() {
    let mut log = Log::new();
    log.provision();
    log.observe(Some(1), ObservedPhase::Ready);
    // eu-2's agent may publish on cp.obs.eu-2.> only; it names the eu-1 instance there, consistently.
    let mut forged = removed(&log);
    forged.cluster = "eu-2".into();
    log.fact_on(forged.subject(), &forged);
    let (model, results) = log.folded();
    assert!(refusal(&results[2]).contains("placed on eu-1, not on eu-2"), "{results:?}");
    let view = model.instance("acme", log.id).unwrap();
    assert!(!view.removed, "the forged removal changed the instance");
    assert_eq!(view.status.state, Health::Healthy);
    assert_eq!(model.skipped(), 1);
}

#[test]
fn a_payload_naming_another_instance_than_its_subject_is_refused() {
    let mut log = Log::new();
    log.provision();
    let victim = log.id;
    // On eu-1's own subject of another instance of eu-1, a payload naming the victim.
    let subject = streams::instances::observed_subject("eu-1", "acme", Uuid::now_v7());
    log.fact_on(subject, &removed(&log));
    // And a payload whose body names the victim under another instance's envelope.
    let mut inner = removed(&log);
    inner.instance_id = Uuid::now_v7();
    log.fact_on(inner.subject(), &inner);
    let (model, results) = log.folded();
    assert!(refusal(&results[1]).contains("the payload names"), "{results:?}");
    assert!(refusal(&results[2]).contains("the payload names"), "{results:?}");
    assert!(!model.instance("acme", victim).unwrap().removed);
}

#[test]
fn a_fact_is_dated_by_the_stream_not_by_its_payload() {
    let mut log = Log::new();
    log.provision();
    log.command(OperationKind::Deprovision, vec![InstanceEvent::DeprovisioningStarted {}]);
    let mut backdated = removed(&log);
    backdated.time = DateTime::from_timestamp(0, 0).unwrap();
    log.fact_on(backdated.subject(), &backdated);
    let (model, _) = log.folded();
    let view = model.instance("acme", log.id).unwrap();
    assert!(view.removed);
    // Retention after deprovisioning counts from here (`backup_scheduler`): the moment the stream stored
    // the fact (message 3), not the epoch the payload claimed.
    assert_eq!(view.observed_at.map(|t| t.timestamp()), Some(1_002));
}

#[test]
fn only_the_control_plane_states_a_backup_verified_or_deleted() {
    let mut log = Log::new();
    log.provision();
    let backup = Uuid::now_v7();
    log.backup_command(backup, OperationKind::Backup, vec![requested(&log)]);
    let deleted = ObservedEvent::BackupDeleted { backup_id: backup };
    log.backup_fact(deleted.clone());
    let (model, results) = log.folded();
    assert!(refusal(&results[2]).contains("stated by the control plane only"), "{results:?}");
    assert_eq!(model.backups().get("acme", backup).unwrap().state, crate::backups::BackupState::Requested);

    let stated = ObservedMessage::from_control_plane("acme", log.id, deleted);
    log.fact_on(stated.subject(), &stated);
    let (model, results) = log.folded();
    assert_eq!(results[3], Ok(true));
    assert_eq!(model.backups().get("acme", backup).unwrap().state, crate::backups::BackupState::Deleted);
}

#[test]
fn a_completed_backup_outside_its_own_instance_s_prefix_is_refused() {
    let mut log = Log::new();
    log.provision();
    let backup = Uuid::now_v7();
    log.backup_command(backup, OperationKind::Backup, vec![requested(&log)]);
    // An empty location would make a later deletion of this backup delete every object in the bucket.
    for location in [String::new(), "acme".to_owned(), format!("other/{}/db/base/x", log.id)] {
        log.backup_fact(ObservedEvent::BackupCompleted {
            backup_id: backup,
            location,
            size_bytes: 1,
            sha256: None,
            duration_ms: 1,
        });
    }
    let (model, results) = log.folded();
    for result in &results[2..] {
        assert!(refusal(result).contains("not a base backup of this instance"), "{results:?}");
    }
    let view = model.backups().get("acme", backup).unwrap();
    assert_eq!((view.state, view.location.as_deref()), (crate::backups::BackupState::Requested, None));
}

#[test]
fn a_backup_fact_from_another_cluster_is_refused() {
    let mut log = Log::new();
    log.provision();
    let backup = Uuid::now_v7();
    log.backup_command(backup, OperationKind::Backup, vec![requested(&log)]);
    let mut failed = ObservedMessage::new(
        "eu-2",
        "acme",
        log.id,
        log.version,
        ObservedEvent::BackupFailed { backup_id: backup, reason: "forged".into() },
    );
    failed.time = DateTime::from_timestamp(0, 0).unwrap();
    log.fact_on(failed.subject(), &failed);
    let (model, results) = log.folded();
    assert!(refusal(&results[2]).contains("backup"), "{results:?}");
    assert_eq!(model.backups().get("acme", backup).unwrap().state, crate::backups::BackupState::Requested);
}

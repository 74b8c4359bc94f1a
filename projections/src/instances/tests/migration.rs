//! A moving instance's facts: the target's reports about the copy are kept apart until the move completes
//! and then become the instance's; the left cluster's "every object gone" is recorded; a cluster the move
//! does not involve is refused, before, during and after.

use super::*;

fn refusal(result: &Result<bool, String>) -> &str {
    result.as_ref().err().map(String::as_str).unwrap_or("applied")
}

fn report(log: &Log, cluster: &str, desired: u64, ready: bool, restore: u64) -> ObservedMessage {
    let applied = domain::instance::Generations { restore, ..domain::instance::Generations::all(1) };
    let state = ObservedState {
        instance_id: log.id,
        observed_generation: ready.then_some(desired),
        desired_generation: desired,
        phase: if ready { ObservedPhase::Ready } else { ObservedPhase::Progressing },
        ready_replicas: 1,
        desired_replicas: 1,
        running_version: None,
        config_hash: None,
        reason: None,
        applied: Some(applied),
        network: None,
        rendered: None,
        users: None,
        config: None,
    };
    ObservedMessage::new(cluster, "acme", log.id, desired, ObservedEvent::InstanceObserved(Box::new(state)))
}

#[test]
fn the_copy_s_reports_wait_apart_until_the_switch_and_strangers_are_refused_throughout() {
    let mut log = Log::new();
    log.provision();
    let (migration, backup) = (Uuid::now_v7(), Uuid::now_v7());
    log.command(
        OperationKind::Migrate,
        vec![InstanceEvent::MigrationStarted {
            migration_id: migration,
            from: "eu-1".into(),
            to: "eu-2".into(),
            backup_id: backup,
        }],
    );
    let restore = domain::instance::restore::RestoreSpec {
        backup_id: backup,
        source_instance_id: log.id,
        location: "acme/x/y".into(),
        target_time: None,
    };
    log.command(
        OperationKind::Migrate,
        vec![InstanceEvent::MigrationTargetPlaced { migration_id: migration, restore, archive_server: None }],
    );
    // The source keeps reporting the instance it serves; the target reports the copy at version 3.
    let source = report(&log, "eu-1", 3, true, 0);
    let copy = report(&log, "eu-2", 3, true, 3);
    let stranger = report(&log, "eu-3", 3, true, 3);
    for (cluster, message) in [("eu-1", &source), ("eu-2", &copy), ("eu-3", &stranger)] {
        log.fact_on(streams::instances::observed_subject(cluster, "acme", log.id), message);
    }
    let (model, results) = log.folded();
    assert_eq!(
        results[3..].iter().map(refusal).collect::<Vec<_>>(),
        [
            "applied",
            "applied",
            "fact refused: instance acme/{id} is placed on eu-1, not on eu-3"
                .replace("{id}", &log.id.to_string())
                .as_str(),
        ]
    );
    let view = model.instance("acme", log.id).unwrap();
    assert_eq!(
        view.observed.as_ref().map(|o| o.applied.unwrap().restore),
        Some(0),
        "the source's report is the status"
    );
    assert_eq!(
        view.migration_target.as_ref().map(|o| o.desired_generation),
        Some(3),
        "the copy's is kept apart"
    );

    // The switch: the copy's report becomes the instance's, healthy with the restore applied.
    log.command(
        OperationKind::Migrate,
        vec![InstanceEvent::MigrationCompleted {
            migration_id: migration,
            from: "eu-1".into(),
            to: "eu-2".into(),
        }],
    );
    let gone = ObservedMessage::new(
        "eu-1",
        "acme",
        log.id,
        4,
        ObservedEvent::InstanceRemoved { instance_id: log.id },
    );
    log.fact_on(streams::instances::observed_subject("eu-1", "acme", log.id), &gone);
    let late = report(&log, "eu-1", 3, true, 0);
    log.fact_on(streams::instances::observed_subject("eu-1", "acme", log.id), &late);
    log.fact_on(streams::instances::observed_subject("eu-3", "acme", log.id), &stranger);
    let (model, results) = log.folded();
    let view = model.instance("acme", log.id).unwrap();
    assert_eq!(view.spec().cluster, "eu-2");
    assert_eq!(view.status.state, crate::Health::Healthy, "{:?}", view.status);
    assert_eq!(view.observed.as_ref().map(|o| o.applied.unwrap().restore), Some(3));
    assert_eq!(view.left, Some(crate::instances::LeftCluster { cluster: "eu-1".into(), removed: true }));
    // The left cluster's late report changes nothing and is not counted a refusal; a stranger still is.
    assert_eq!(refusal(&results[8]), "applied");
    assert_eq!(results[8], Ok(false), "a late report of the left cluster changed the record");
    assert!(refusal(&results[9]).contains("is placed on eu-2, not on eu-3"), "{:?}", results[9]);
}

//! Folding tests: messages as the store and agents write them, the records they make.

use chrono::DateTime;
use domain::{
    InstanceEvent, ServiceType,
    catalog::Resources,
    instance::InstanceProvisioned,
    observed::{ObservedPhase, ObservedState},
};
use serde_json::json;
use streams::observed::ObservedMessage;

use super::*;

/// A stream of messages as the store and agents write them: (subject, payload).
struct Log {
    id: Uuid,
    version: u64,
    messages: Vec<(String, Vec<u8>)>,
    /// the version the agent's reports say runs
    running: Option<String>,
}

impl Log {
    fn new() -> Self {
        Self { id: Uuid::now_v7(), version: 0, messages: Vec::new(), running: None }
    }

    fn command(&mut self, operation: OperationKind, events: Vec<InstanceEvent>) -> Uuid {
        let mut metadata = streams::CommandMetadata::new(operation, "test");
        metadata.time = DateTime::from_timestamp(1_000 + self.messages.len() as i64, 0).unwrap();
        let batch = EventBatch {
            aggregate_type: <Instance as Aggregate>::TYPE.to_owned(),
            aggregate_id: streams::instances::aggregate_id("acme", self.id),
            first_version: self.version + 1,
            events: EventBatch::encode_events::<Instance>(&events).unwrap(),
            metadata: metadata.clone(),
            snapshot: None,
        };
        self.version += events.len() as u64;
        let subject = streams::instances::instance_subject("eu-1", "acme", self.id);
        self.messages.push((subject, serde_json::to_vec(&batch).unwrap()));
        metadata.command_id
    }

    fn provision(&mut self) -> Uuid {
        self.provision_as(ServiceType::Postgresql, "16")
    }

    fn provision_as(&mut self, service: ServiceType, version: &str) -> Uuid {
        let provisioned = InstanceProvisioned {
            instance_id: self.id,
            project: "acme".into(),
            name: "db".into(),
            service,
            version: version.into(),
            plan: "starter".into(),
            resources: Resources { cpu_millis: 500, memory_mib: 1024, replicas: 1 },
            storage_gib: 10,
            config: Default::default(),
            description: String::new(),
            deletion_protection: false,
            cluster: "eu-1".into(),
        };
        self.command(OperationKind::Provision, vec![InstanceEvent::InstanceProvisioned(provisioned)])
    }

    fn describe(&mut self, text: &str) -> Uuid {
        self.command(
            OperationKind::Update,
            vec![InstanceEvent::DescriptionChanged { description: text.into() }],
        )
    }

    fn observe(&mut self, observed: Option<u64>, phase: ObservedPhase) {
        self.report(observed, phase, None);
    }

    /// The agent reports each aspect applied at its own generation; ready once everything is.
    fn observe_aspects(&mut self, applied: domain::instance::Generations, ready: bool) {
        let phase = if ready { ObservedPhase::Ready } else { ObservedPhase::Progressing };
        self.report(ready.then_some(self.version), phase, Some(applied));
    }

    fn report(
        &mut self,
        observed: Option<u64>,
        phase: ObservedPhase,
        applied: Option<domain::instance::Generations>,
    ) {
        self.report_on(self.version, observed, phase, applied);
    }

    /// A report the agent made while it worked towards `desired`.
    fn report_on(
        &mut self,
        desired: u64,
        observed: Option<u64>,
        phase: ObservedPhase,
        applied: Option<domain::instance::Generations>,
    ) {
        let state = ObservedState {
            instance_id: self.id,
            observed_generation: observed,
            desired_generation: desired,
            phase,
            ready_replicas: 1,
            desired_replicas: 1,
            running_version: self.running.clone(),
            config_hash: None,
            reason: (phase == ObservedPhase::Failed).then(|| "CrashLoopBackOff".into()),
            applied,
            network: None,
            rendered: None,
            users: None,
            config: None,
        };
        let mut message = ObservedMessage::new(
            "eu-1",
            "acme",
            self.id,
            desired,
            ObservedEvent::InstanceObserved(Box::new(state)),
        );
        message.time = DateTime::from_timestamp(1_000 + self.messages.len() as i64, 0).unwrap();
        self.messages.push((message.subject(), message.to_vec().unwrap()));
    }

    fn fold(&self, model: &mut ReadModel, from: usize, to: usize) {
        for (n, (subject, payload)) in self.messages.iter().enumerate().take(to).skip(from) {
            // The stream dates each message as it stores it: here, as the log dated it when written.
            let stored_at = DateTime::from_timestamp(1_000 + n as i64, 0).unwrap();
            let _ = model.apply_message(n as u64 + 1, subject, payload, stored_at);
        }
    }
}

/// What a bucket holds: the records written, the checkpoint written after them.
fn store(written: &[(RecordKey, Vec<u8>)], checkpoint: Checkpoint) -> ReadModel {
    let mut loaded = ReadModel::default();
    for (key, value) in written {
        loaded.load_record(key, value).unwrap();
    }
    loaded.load_record(&RecordKey::Checkpoint, &serde_json::to_vec(&checkpoint).unwrap()).unwrap();
    loaded
}

#[test]
fn a_projector_that_died_between_records_and_checkpoint_applies_nothing_twice() {
    // given a log of provision, observations and description changes
    let mut log = Log::new();
    log.provision();
    log.observe(Some(1), ObservedPhase::Ready);
    for n in 0..6 {
        log.describe(&format!("change {n}"));
    }
    log.observe(Some(7), ObservedPhase::Ready);
    let mut clean = ReadModel::default();
    log.fold(&mut clean, 0, log.messages.len());

    // when a projector flushed messages 1..=3 with their checkpoint, folded 4..=6, wrote only some of
    // the changed records and died before the checkpoint
    let mut dying = ReadModel::default();
    log.fold(&mut dying, 0, 3);
    let mut bucket = dying.take_changes();
    let checkpoint = dying.checkpoint();
    log.fold(&mut dying, 3, 6);
    let partial = dying.take_changes();
    bucket.retain(|(key, _)| !partial.iter().any(|(k, _)| k == key));
    bucket.extend(partial.into_iter().filter(|(key, _)| matches!(key, RecordKey::Instance { .. })));

    // then a new projector loads the bucket, replays from the checkpoint and equals a clean fold
    let mut restarted = store(&bucket, checkpoint);
    assert_eq!(restarted.last_sequence(), 3);
    log.fold(&mut restarted, 3, log.messages.len());
    assert_eq!(restarted.differences(&clean, 10), Vec::<String>::new());
    assert_eq!(restarted.instance("acme", log.id).unwrap().messages, log.messages.len() as u64);
}

#[test]
fn records_survive_the_round_trip_through_the_bucket() {
    let mut log = Log::new();
    log.provision();
    log.observe(Some(1), ObservedPhase::Ready);
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    let loaded = store(&model.take_changes(), model.checkpoint());
    assert_eq!(loaded, model);
    assert_eq!(loaded.instance("acme", log.id).unwrap().status.state, Health::Healthy);
}

#[test]
fn a_backlog_is_written_as_one_record_per_instance_and_operations_in_pages() {
    let mut log = Log::new();
    log.provision();
    for n in 0..2_499 {
        log.describe(&format!("change {n}"));
    }
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    let records = model.take_changes();
    let keys: Vec<String> = records.iter().map(|(key, _)| key.key()).collect();
    assert_eq!(
        keys,
        [
            format!("instance.acme.{}", log.id),
            format!("operations.{:020}", 1),
            format!("operations.{:020}", 1001),
            format!("operations.{:020}", 2001)
        ]
    );
    assert_eq!(store(&records, model.checkpoint()), model);
    assert_eq!(model.take_changes(), Vec::new(), "nothing changed since");
}

#[test]
fn an_operation_succeeds_once_its_generation_is_observed_and_fails_with_the_agents_reason() {
    let mut log = Log::new();
    log.provision();
    let change = log.describe("x");
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    assert_eq!(model.operation("acme", change).unwrap().state, OperationState::InProgress);
    assert_eq!(model.operation("other", change), None, "operations are per project");

    log.observe(Some(1), ObservedPhase::Failed);
    log.fold(&mut model, 2, 3);
    let OperationState::Failed { reason, instance_usable, .. } =
        model.operation("acme", change).unwrap().state
    else {
        panic!("a failure at the operation's generation fails it")
    };
    assert_eq!((reason.as_str(), instance_usable), ("CrashLoopBackOff", true));

    log.observe(Some(2), ObservedPhase::Ready);
    log.fold(&mut model, 3, 4);
    assert_eq!(model.operation("acme", change).unwrap().state, OperationState::Succeeded);
}

#[test]
fn a_report_on_an_older_generation_arriving_late_changes_nothing() {
    // After an intake gate's failover, a fact the agent made before a newer one can reach the stream
    // after it (three_nodes.rs saw operations go back to "in progress" for good).
    let mut log = Log::new();
    log.provision();
    let first = log.describe("x");
    let second = log.describe("y");
    log.observe(Some(3), ObservedPhase::Ready);
    log.report_on(2, Some(1), ObservedPhase::Progressing, None);
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    for op in [first, second] {
        assert_eq!(model.operation("acme", op).unwrap().state, OperationState::Succeeded);
    }
    let view = model.instance("acme", log.id).unwrap();
    assert_eq!(view.observed.as_ref().and_then(|o| o.observed_generation), Some(3));
    assert_eq!(view.status.state, crate::Health::Healthy);
    // The same report in its place (before the newer one) is folded as usual.
    let mut in_order = Log::new();
    in_order.provision();
    in_order.describe("x");
    in_order.report_on(2, Some(1), ObservedPhase::Progressing, None);
    let mut model = ReadModel::default();
    in_order.fold(&mut model, 0, in_order.messages.len());
    let view = model.instance("acme", in_order.id).unwrap();
    assert_eq!(view.observed.as_ref().map(|o| o.desired_generation), Some(2));
}

#[test]
fn each_operation_completes_when_its_own_aspect_is_applied() {
    use domain::instance::{AclEntry, Aspect, Generations};
    let mut log = Log::new();
    log.provision();
    let upgrade = log.command(
        OperationKind::Update,
        vec![InstanceEvent::VersionUpgraded { from: "16".into(), to: "17".into() }],
    );
    let acl = |cidr: &str| InstanceEvent::NetworkAccessChanged { entries: vec![AclEntry::new(cidr, "")] };
    let first_acl = log.command(OperationKind::Update, vec![acl("10.0.0.0/8")]);
    let second_acl = log.command(OperationKind::Update, vec![acl("192.0.2.0/24")]);
    // The agent applied the newest ACL (which superseded the first) while the upgrade still rolls.
    log.observe_aspects(
        Generations {
            version: 1,
            resources: 1,
            configuration: 1,
            network_access: 4,
            credentials: 0,
            restore: 0,
            users: 0,
        },
        false,
    );
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    let state = |model: &ReadModel, id| model.operation("acme", id).unwrap().state;
    assert_eq!(state(&model, second_acl), OperationState::Succeeded);
    assert_eq!(state(&model, first_acl), OperationState::Succeeded, "superseded on its own aspect");
    assert_eq!(
        state(&model, upgrade),
        OperationState::InProgress,
        "another aspect's change does not complete it"
    );
    let view = model.instance("acme", log.id).unwrap();
    let health = |aspect| view.status.aspects.iter().find(|(a, _)| *a == aspect).map(|(_, h)| *h);
    assert_eq!(health(Aspect::NetworkAccess), Some(Health::Healthy));
    assert_eq!(health(Aspect::Version), Some(Health::Reconciling));

    log.observe_aspects(
        Generations {
            version: 2,
            resources: 1,
            configuration: 1,
            network_access: 4,
            credentials: 0,
            restore: 0,
            users: 0,
        },
        true,
    );
    log.fold(&mut model, log.messages.len() - 1, log.messages.len());
    assert_eq!(state(&model, upgrade), OperationState::Succeeded);
}

#[test]
fn an_unknown_event_is_counted_and_skipped_and_the_next_one_applies() {
    let mut log = Log::new();
    log.provision();
    let unknown = EventBatch {
        aggregate_type: <Instance as Aggregate>::TYPE.to_owned(),
        aggregate_id: streams::instances::aggregate_id("acme", log.id),
        first_version: 2,
        events: vec![streams::envelope::StoredEvent {
            event_type: "InstanceTeleported".into(),
            schema: "1".into(),
            data: json!({}),
        }],
        metadata: streams::CommandMetadata::new(OperationKind::Update, "x"),
        snapshot: None,
    };
    log.messages.push((log.messages[0].0.clone(), serde_json::to_vec(&unknown).unwrap()));
    log.version += 1;
    log.describe("after");
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    assert_eq!((model.skipped(), model.last_sequence()), (1, 3));
    assert_eq!(model.instance("acme", log.id).unwrap().spec().description, "after");
}

mod backups;
mod facts;
mod migration;

#[test]
fn a_held_change_keeps_the_instance_as_it_runs_until_applied_and_the_scheduler_sees_it_only_in_its_window() {
    use domain::{
        ConfigValue,
        instance::maintenance::{MaintenanceTrigger, PendingConfiguration, PendingMaintenance},
    };
    let mut log = Log::new();
    log.provision();
    log.observe(Some(1), ObservedPhase::Ready);
    let held_config: domain::catalog::Config = [("max_connections".to_owned(), ConfigValue::Int(300))].into();
    let hold = log.command(
        OperationKind::Update,
        vec![InstanceEvent::PendingMaintenanceChanged {
            pending: PendingMaintenance {
                configuration: Some(PendingConfiguration {
                    config: held_config.clone(),
                    parameters: vec!["max_connections".into()],
                }),
                version: None,
            },
        }],
    );
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    let view = model.instance("acme", log.id).unwrap();
    assert_eq!(view.status.state, Health::Healthy, "nothing for the cluster to apply while it is held");
    // Like any change of no aspect, it is done once the cluster has seen its generation.
    log.observe(Some(2), ObservedPhase::Ready);
    log.fold(&mut model, 3, log.messages.len());
    let view = model.instance("acme", log.id).unwrap();
    assert!(view.status.pending_restart.is_empty());
    assert_eq!(model.operation("acme", hold).unwrap().state, OperationState::Succeeded);
    assert!(!view.spec().pending_maintenance.is_empty());
    // The default window: Sunday 02:00 UTC for four hours (2026-12-06 is a Sunday).
    let inside = "2026-12-06T03:00:00Z".parse().unwrap();
    let outside = "2026-12-07T03:00:00Z".parse().unwrap();
    assert_eq!(crate::maintenance_scheduler::due(&model, outside), []);
    assert_eq!(crate::maintenance_scheduler::due(&model, inside), [("acme".to_owned(), log.id, 2)]);

    let applied = log.command(
        OperationKind::ApplyMaintenance,
        vec![
            InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Window },
            InstanceEvent::ConfigurationChanged {
                config: held_config,
                changed: vec!["max_connections".into()],
                restart: vec!["max_connections".into()],
            },
        ],
    );
    log.fold(&mut model, 4, log.messages.len());
    let view = model.instance("acme", log.id).unwrap();
    assert!(view.spec().pending_maintenance.is_empty());
    assert_eq!(view.status.state, Health::Reconciling);
    assert_eq!(view.status.pending_restart, ["max_connections"]);
    assert_eq!(model.operation("acme", applied).unwrap().state, OperationState::InProgress);
    assert_eq!(crate::maintenance_scheduler::due(&model, inside), [], "nothing held any more");
}

#[test]
fn a_user_is_applied_at_its_generation_pending_before_and_in_error_with_the_engine_s_reason() {
    use domain::{
        instance::users::User,
        observed::{ObservedState, ObservedUser},
    };
    let users = [
        User { name: "bi".into(), role: "readonly".into(), generation: 3 },
        User { name: "etl".into(), role: "readwrite".into(), generation: 5 },
        User { name: "new".into(), role: "readonly".into(), generation: 6 },
    ];
    let pending: Vec<_> = super::user_views(&users, None).into_iter().map(|u| u.state).collect();
    assert_eq!(pending, [super::UserState::Pending; 3], "nothing reported yet");
    let report = ObservedState {
        instance_id: Uuid::nil(),
        observed_generation: Some(6),
        desired_generation: 6,
        phase: ObservedPhase::Failed,
        ready_replicas: 1,
        desired_replicas: 1,
        running_version: None,
        config_hash: None,
        config: None,
        reason: None,
        applied: None,
        network: None,
        rendered: None,
        users: Some(vec![
            ObservedUser { name: "bi".into(), generation: 3, reason: None },
            ObservedUser {
                name: "etl".into(),
                generation: 0,
                reason: Some("could not perform ALTER ROLE".into()),
            },
        ]),
    };
    let views = super::user_views(&users, Some(&report));
    let states: Vec<_> = views.iter().map(|u| (u.name.as_str(), u.state, u.reason.as_deref())).collect();
    assert_eq!(
        states,
        [
            ("bi", super::UserState::Applied, None),
            ("etl", super::UserState::Error, Some("could not perform ALTER ROLE")),
            ("new", super::UserState::Pending, None),
        ]
    );
}

#[test]
fn a_rollout_s_instance_is_waiting_then_held_then_upgrading_then_failed_or_applied_as_its_cluster_reports() {
    use domain::instance::maintenance::{MaintenanceTrigger, PendingMaintenance, PendingVersion};

    use crate::rollouts::{Step, progress};
    let rollout = streams::rollouts::Rollout {
        id: Uuid::now_v7(),
        service: ServiceType::Influxdb,
        from_version: "2.6".into(),
        to_version: "2.7".into(),
        created_at: DateTime::from_timestamp(1_000, 0).unwrap(),
        actor: "admin".into(),
    };
    // The default window: Sunday 02:00 UTC for four hours (2026-12-07 is a Monday).
    let now = "2026-12-07T10:00:00Z".parse().unwrap();
    let steps = |model: &ReadModel| -> Vec<(Step, Option<String>)> {
        progress(model, &rollout, now)
            .into_iter()
            .map(|t| (t.step, t.scheduled_for.map(|s| s.to_rfc3339())))
            .collect()
    };
    let mut log = Log::new();
    log.running = Some("2.6".into());
    log.provision_as(ServiceType::Influxdb, "2.6");
    log.observe(Some(1), ObservedPhase::Ready);
    let mut other = Log::new();
    other.provision_as(ServiceType::Influxdb, "2.7");
    // One stream: the other instance's provision after this one's messages.
    log.messages.append(&mut other.messages);
    let mut model = ReadModel::default();
    log.fold(&mut model, 0, log.messages.len());
    assert_eq!(steps(&model), [(Step::Waiting, None)], "only the instance at from_version");

    let held = PendingVersion { from: "2.6".into(), to: "2.7".into(), rollout: rollout.id };
    log.command(
        OperationKind::Update,
        vec![InstanceEvent::PendingMaintenanceChanged {
            pending: PendingMaintenance { configuration: None, version: Some(held) },
        }],
    );
    log.observe(Some(2), ObservedPhase::Ready);
    let folded = log.messages.len();
    log.fold(&mut model, 3, folded);
    assert_eq!(steps(&model), [(Step::Held, Some("2026-12-13T02:00:00+00:00".into()))]);

    log.command(
        OperationKind::ApplyMaintenance,
        vec![
            InstanceEvent::MaintenanceApplied { trigger: MaintenanceTrigger::Window },
            InstanceEvent::VersionUpgraded { from: "2.6".into(), to: "2.7".into() },
        ],
    );
    log.fold(&mut model, folded, log.messages.len());
    assert_eq!(steps(&model), [(Step::Upgrading, None)], "released; the cluster still runs 2.6");
    let folded = log.messages.len();
    log.observe(None, ObservedPhase::Failed);
    log.fold(&mut model, folded, log.messages.len());
    let targets = progress(&model, &rollout, now);
    assert_eq!((targets[0].step, targets[0].reason.as_deref()), (Step::Failed, Some("CrashLoopBackOff")));
    let folded = log.messages.len();
    log.running = Some("2.7".into());
    log.observe(Some(4), ObservedPhase::Ready);
    log.fold(&mut model, folded, log.messages.len());
    assert_eq!(steps(&model), [(Step::Applied, None)]);
}

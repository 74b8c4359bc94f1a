//! Backup schedules end to end, on a simulated clock: a schedule every minute makes backups, retention
//! keeps exactly N, and the expired backups' objects are deleted from a real S3 store.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use backup_store::Verification;
use chrono::{DurationRound as _, TimeDelta, Utc};
use projections::{BackupState, Health, backup_scheduler::Scheduler};
use serde_json::json;
use system_tests::{ACME_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn editor() -> String {
    format!("Bearer {ACME_EDITOR_TOKEN}")
}

#[tokio::test]
async fn a_minutely_schedule_makes_backups_and_retention_keeps_exactly_the_last_two() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let target = s3.target();
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target)).await;
    let store = s3.store();
    let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
    let _worker = tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        store.clone(),
        jetstream,
    ));

    let body = json!({"name": "orders", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor())])
        .await;
    let instance: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let schedules = format!("/v1/projects/acme/instances/{instance}/backup-schedules");

    // Bad input is named field by field and stored nowhere.
    let bad = json!({"name": "x", "cron": "0 30 2 * * *", "time_zone": "Mars/Olympus", "retention": {"keep_last": 2}});
    let refused = api.call(Method::POST, &schedules, Some(&bad), &[("authorization", &editor())]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    let fields: Vec<&str> =
        refused.body["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["/cron", "/time_zone"], "{}", refused.body);

    let every_minute = json!({"name": "every-minute", "cron": "* * * * *", "retention": {"keep_last": 2}});
    let made = api.call(Method::POST, &schedules, Some(&every_minute), &[("authorization", &editor())]).await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.body);
    let location = made.header("cp-schedule-location").expect("where the schedule is").to_owned();
    let shown = api.call(Method::GET, &location, None, &[("authorization", &editor())]).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["time_zone"], "UTC", "the default time zone");
    assert!(shown.body["next_run_at"].is_string(), "{}", shown.body);
    // The scheduler reads the read models: wait until they have the schedule.
    let seen = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", instance).is_some_and(|v| v.spec().backup_schedules.len() == 1)
        })
        .await;
    assert!(seen, "the schedule never reached the read models");
    let listed = api.call(Method::GET, &schedules, None, &[("authorization", &editor())]).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));

    // The clock: the scheduler is handed the time, a minute at a time, from the start of a minute.
    let start = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let mut scheduler = Scheduler::new(api.state.read_models.clone(), api.state.backups.clone(), start);
    let completed = |n: usize| {
        api.state.read_models.wait_until(WAIT, move |m| {
            m.backups().of_instance("acme", instance, Some(BackupState::Completed), None, 100).len()
                + m.backups().of_instance("acme", instance, Some(BackupState::Deleting), None, 100).len()
                + m.backups().of_instance("acme", instance, Some(BackupState::Deleted), None, 100).len()
                >= n
        })
    };
    for minute in 1..=4 {
        let pass = scheduler.pass(start + TimeDelta::minutes(minute) + TimeDelta::seconds(1)).await;
        assert_eq!(pass.requested, 1, "minute {minute}: one backup");
        assert!(completed(minute as usize).await, "minute {minute}: the backup never completed");
    }
    // Another pass in the same minute makes no backup, and expires what retention no longer keeps.
    let pass = scheduler.pass(start + TimeDelta::minutes(4) + TimeDelta::seconds(30)).await;
    assert_eq!(pass.requested, 0, "one backup per minute");
    let kept_two = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            let all = m.backups().of_instance("acme", instance, None, None, 100);
            all.len() == 4
                && all.iter().filter(|b| b.state == BackupState::Completed).count() == 2
                && all.iter().filter(|b| b.state == BackupState::Deleted).count() == 2
        })
        .await;
    let all: Vec<_> = api
        .state
        .read_models
        .read()
        .backups()
        .of_instance("acme", instance, None, None, 100)
        .into_iter()
        .cloned()
        .collect();
    assert!(
        kept_two,
        "retention keeps exactly the last two: {:?}",
        all.iter().map(|b| (b.id, b.state)).collect::<Vec<_>>()
    );
    // Newest first: the two newest are kept; the two oldest are gone from the store.
    for (n, backup) in all.iter().enumerate() {
        let location = backup.location.as_deref().expect("each had an object");
        let found = store
            .verify(location, backup.size_bytes.unwrap(), backup.sha256.as_deref().unwrap())
            .await
            .unwrap();
        let expected = if n < 2 { Verification::Matches } else { Verification::Missing };
        assert_eq!(found, expected, "backup {n} (newest first)");
        assert!(matches!(backup.trigger, domain::BackupTrigger::Schedule { .. }));
    }
    // A disabled schedule makes nothing.
    let schedule_id = shown.body["id"].as_str().unwrap();
    let off =
        json!({"name": "every-minute", "cron": "* * * * *", "enabled": false, "retention": {"keep_last": 2}});
    let disabled = api
        .call(Method::PUT, &format!("{schedules}/{schedule_id}"), Some(&off), &[("authorization", &editor())])
        .await;
    assert_eq!(disabled.status, StatusCode::ACCEPTED, "{}", disabled.body);
    let turned_off = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", instance).is_some_and(|v| v.spec().backup_schedules.iter().all(|s| !s.enabled))
        })
        .await;
    assert!(turned_off);
    let pass = scheduler.pass(start + TimeDelta::minutes(6)).await;
    assert_eq!(pass.requested, 0, "a disabled schedule makes no backup");

    // Deprovisioned, its backups stay listed until the retention after deprovisioning ends (41 days by
    // default), and are deleted from the store then.
    let gone = api
        .call(
            Method::DELETE,
            &format!("/v1/projects/acme/instances/{instance}"),
            None,
            &[("authorization", &editor())],
        )
        .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{}", gone.body);
    let removed = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.instance("acme", instance).is_some_and(|v| v.removed))
        .await;
    assert!(removed, "the cluster never reported the instance removed");
    let removed_at = api.state.read_models.read().instance("acme", instance).unwrap().observed_at.unwrap();
    let retention =
        TimeDelta::days(i64::from(projections::backup_scheduler::RETENTION_AFTER_DEPROVISION_DAYS));
    let pass = scheduler.pass(removed_at + retention - TimeDelta::minutes(1)).await;
    assert_eq!(pass.expired, 0, "kept until the retention ends");
    let kept = |m: &projections::ReadModel| {
        m.backups().of_instance("acme", instance, Some(BackupState::Completed), None, 100).len()
    };
    assert_eq!(kept(&api.state.read_models.read()), 2, "still listed as completed");
    let pass = scheduler.pass(removed_at + retention + TimeDelta::seconds(1)).await;
    assert_eq!(pass.expired, 2, "both kept backups expire with the retention");
    let all_deleted = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            let all = m.backups().of_instance("acme", instance, None, None, 100);
            all.len() == 4 && all.iter().all(|b| b.state == BackupState::Deleted)
        })
        .await;
    assert!(all_deleted, "the expired backups were never deleted");
    for backup in &all[..2] {
        let found = store
            .verify(
                backup.location.as_deref().unwrap(),
                backup.size_bytes.unwrap(),
                backup.sha256.as_deref().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(found, Verification::Missing, "gone from the store");
    }
}

/// Killing the leading projector just before a schedule's due time, so that the standby takes the lease
/// over only after it (the lease outlives its holder), yields exactly one backup of that time: the new
/// leader's scheduler looks back over the handover (`projections::singleton`) and asks under the id the
/// schedule and the time make, which a second request could not duplicate. The projectors are two
/// replicas as `cp-projector run` runs them, on runtimes of their own; the kill stops one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_projector_in_a_schedule_s_due_minute_yields_exactly_one_backup() {
    use system_tests::parts::ProjectorReplica;
    let api = TestApi::start_without_projector(WAIT).await;
    // A short lease (the bucket's max age), so the handover takes seconds, not ten.
    let settings = streams::Settings { lease_ttl: Duration::from_secs(3), ..streams::Settings::default() };
    settings.apply(&async_nats::jetstream::new(api.nats_server.connect().await)).await.expect("the topology");
    let addresses = vec![api.nats_server.address()];
    let period = Duration::from_secs(1);
    let mut projectors = vec![
        ProjectorReplica::start("projector-a", addresses.clone(), settings.clone(), period).await,
        ProjectorReplica::start("projector-b", addresses.clone(), settings.clone(), period).await,
    ];
    assert!(projectors[0].wait_until_leading(WAIT).await, "the first replica never led");
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;

    let body = json!({"name": "orders", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor())])
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let instance: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let schedules = format!("/v1/projects/acme/instances/{instance}/backup-schedules");
    let every_minute = json!({"name": "every-minute", "cron": "* * * * *", "retention": {"keep_last": 5}});
    let made = api.call(Method::POST, &schedules, Some(&every_minute), &[("authorization", &editor())]).await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.body);
    let seen = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", instance).is_some_and(|v| v.spec().backup_schedules.len() == 1)
        })
        .await;
    assert!(seen, "the schedule never reached the read models");
    let schedule =
        api.state.read_models.read().instance("acme", instance).unwrap().spec().backup_schedules[0].id;

    // The due minute: the next one at least a few seconds away.
    let now = Utc::now();
    let mut due = now.duration_trunc(TimeDelta::minutes(1)).unwrap() + TimeDelta::minutes(1);
    if due - now < TimeDelta::seconds(4) {
        due += TimeDelta::minutes(1);
    }
    let backup = projections::backup_scheduler::scheduled_backup_id(schedule, due);
    let of_minute = |m: &projections::ReadModel| {
        m.backups()
            .of_instance("acme", instance, None, None, 100)
            .iter()
            .filter(|b| b.requested_at >= due && b.requested_at < due + TimeDelta::minutes(1))
            .map(|b| b.id)
            .collect::<Vec<_>>()
    };
    // The scenario's clock: a second before the time is due, the leader dies. It cannot have asked yet.
    let until_kill = (due - TimeDelta::seconds(1) - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_kill).await;
    let leading = projectors.iter().position(ProjectorReplica::leads).expect("a leading replica");
    let mut killed = projectors.remove(leading);
    killed.part.kill();
    let killed_at = Utc::now();
    assert!(killed_at < due, "killed too late to test the handover ({killed_at} for {due})");
    assert!(projectors[0].wait_until_leading(WAIT).await, "the standby never took over");
    let took_over = Utc::now();
    assert!(
        took_over > due,
        "the standby led before the time was due ({took_over} for {due}): no handover in it"
    );
    let made = api.state.read_models.wait_until(WAIT, |m| !of_minute(m).is_empty()).await;
    assert!(made, "no backup for {due}: the time due during the handover was skipped");
    // Five more passes of the new leader's scheduler change nothing: one backup of that minute, the one
    // of the schedule's id for it (the wait is for something that must not happen, so it runs out).
    let second = api.state.read_models.wait_until(period * 5, |m| of_minute(m).len() > 1).await;
    let found = of_minute(&api.state.read_models.read());
    assert!(!second && found == [backup], "exactly one backup for {due}, {backup}: {found:?}");
    println!(
        "projector handover: killed {:.1} s before the due time; the standby led {:.1} s after it",
        (due - killed_at).as_seconds_f64(),
        (took_over - due).as_seconds_f64()
    );
}

//! The control plane's checks of backups, made to fail: a backup whose object in the real store is not
//! what its cluster reported (another size, another checksum, gone) is shown `verified: false` with the
//! reason and refused as a restore source; a PostgreSQL base backup whose WAL is gone is found out through
//! Barman's catalogue though a listing of its objects still matches; a schedule's `max_age_days` keeps a
//! backup exactly that long and deletes it from the store a moment later.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use backup_store::Verification;
use chrono::{DurationRound as _, TimeDelta, Utc};
use projections::{BackupState, Health, backup_scheduler::Scheduler};
use serde_json::{Value, json};
use system_tests::{ACME_ADMIN_TOKEN, ACME_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn call(api: &TestApi, method: Method, path: &str, body: Option<&Value>) -> system_tests::Reply {
    api.call(method, path, body, &[("authorization", &format!("Bearer {ACME_EDITOR_TOKEN}"))]).await
}

/// A restore in place replaces data: the project's admin may.
async fn restore_in_place(api: &TestApi, instance: Uuid, backup: Uuid) -> system_tests::Reply {
    let path = format!("/v1/projects/acme/instances/{instance}/restore");
    let body = json!({"backup_id": backup});
    api.call(Method::POST, &path, Some(&body), &[("authorization", &format!("Bearer {ACME_ADMIN_TOKEN}"))])
        .await
}

async fn mongodb(api: &TestApi, name: &str) -> Uuid {
    let body =
        json!({"name": name, "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = call(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, WAIT).await, "{name} never healthy");
    id
}

async fn completed_backup(api: &TestApi, instance: Uuid) -> Uuid {
    let asked =
        call(api, Method::POST, &format!("/v1/projects/acme/instances/{instance}/backups"), None).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let id: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(id, "succeeded", WAIT).await, "the backup never completed");
    id
}

/// Three backups are tampered with in the store after their cluster reported them and before the control
/// plane looks: each is shown unverified with what differs, and refused as a restore source (in place and
/// into a new instance) with that reason; an untouched one is verified and accepted. Fails when the
/// backup worker answers `matches: true` whatever it finds, or when the API restores from a backup whose
/// verification failed.
#[tokio::test]
async fn a_backup_whose_object_is_not_as_reported_is_shown_unverified_with_why_and_never_restored() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(s3.target())).await;
    let instance = mongodb(&api, "orders").await;
    let [resized, rewritten, lost, intact] = [
        completed_backup(&api, instance).await,
        completed_backup(&api, instance).await,
        completed_backup(&api, instance).await,
        completed_backup(&api, instance).await,
    ];
    let view = |id| api.state.read_models.read().backups().get("acme", id).cloned().expect("its record");
    let store = s3.store();
    let reported_size = |id| view(id).size_bytes.expect("a reported size");
    let location = |id| view(id).location.expect("a reported location");
    // Another size; the same size with other bytes; gone.
    store.put(&location(resized), vec![7; reported_size(resized) as usize + 1]).await.unwrap();
    let (_, sha256) =
        store.put(&location(rewritten), vec![7; reported_size(rewritten) as usize]).await.unwrap();
    assert_ne!(Some(sha256), view(rewritten).sha256, "other bytes than the reported ones");
    store.delete(&location(lost)).await.unwrap();
    assert_eq!(
        store
            .verify(&location(intact), reported_size(intact), view(intact).sha256.as_deref().unwrap())
            .await
            .unwrap(),
        Verification::Matches
    );

    // Only now does the control plane look.
    let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
    let _worker = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        store.clone(),
        jetstream,
    )));
    let all = [resized, rewritten, lost, intact];
    let checked = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            all.iter().all(|id| m.backups().get("acme", *id).is_some_and(|b| b.verified.is_some()))
        })
        .await;
    assert!(checked, "the control plane never checked them: {:?}", all.map(view));

    let expected = [
        (
            resized,
            format!("{} bytes, not the {} reported", reported_size(resized) + 1, reported_size(resized)),
        ),
        (rewritten, "SHA-256 ".to_owned()),
        (lost, format!("no object at {}", location(lost))),
    ];
    for (backup, why) in &expected {
        let shown = call(
            &api,
            Method::GET,
            &format!("/v1/projects/acme/instances/{instance}/backups/{backup}"),
            None,
        )
        .await;
        assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
        assert_eq!(shown.body["verified"], false, "{}", shown.body);
        let detail = shown.body["verification_detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why.as_str()), "the reason says what differs ({why:?}): {}", shown.body);

        let in_place = restore_in_place(&api, instance, *backup).await;
        assert_eq!(
            in_place.status,
            StatusCode::CONFLICT,
            "restored in place from {backup}: {}",
            in_place.body
        );
        assert_eq!(in_place.body["code"], "backup_not_restorable");
        let said = in_place.body["detail"].as_str().unwrap_or_default();
        assert!(
            said.contains("not as its cluster reported") && said.contains(why.as_str()),
            "{}",
            in_place.body
        );

        let body = json!({"name": format!("from-{}", &backup.to_string()[..8]), "service": "mongodb", "version": "7.0",
                          "plan": "starter", "cluster": "eu-1", "restore_from": {"backup_id": backup}});
        let into_new = call(&api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
        assert_eq!(into_new.status, StatusCode::CONFLICT, "a new instance from {backup}: {}", into_new.body);
        assert_eq!(into_new.body["code"], "backup_not_restorable");
    }
    // The untouched one: verified, and a restore source.
    assert_eq!(view(intact).verified, Some(true), "{:?}", view(intact));
    let body = json!({"name": "from-intact", "service": "mongodb", "version": "7.0", "plan": "starter",
                      "cluster": "eu-1", "restore_from": {"backup_id": intact}});
    let accepted = call(&api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
}

/// `max_age_days: 1` on the scheduler's clock: a backup is kept at exactly one day after it was asked
/// for, and its deletion asked for (and its object deleted from the store) one millisecond later. Fails
/// when the age comparison is off by its boundary (`<=`) or ignored.
#[tokio::test]
async fn max_age_days_keeps_a_backup_exactly_that_long() {
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let api = &stack.api;
    let instance = mongodb(api, "orders").await;
    let schedules = format!("/v1/projects/acme/instances/{instance}/backup-schedules");
    let daily = json!({"name": "daily", "cron": "0 3 * * *", "retention": {"max_age_days": 1}});
    let made = call(api, Method::POST, &schedules, Some(&daily)).await;
    assert_eq!(made.status, StatusCode::ACCEPTED, "{}", made.body);
    let seen = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", instance).is_some_and(|v| v.spec().backup_schedules.len() == 1)
        })
        .await;
    assert!(seen, "the schedule never reached the read models");

    // Its first backup, on the scheduler's clock (03:00 UTC on the first day after the schedule).
    let start = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    let mut scheduler = Scheduler::new(api.state.read_models.clone(), api.state.backups.clone(), start);
    let first_due = start + TimeDelta::hours(3);
    assert_eq!(scheduler.pass(first_due).await.requested, 1, "the 03:00 backup");
    let made = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.backups().of_instance("acme", instance, Some(BackupState::Completed), None, 10).len() == 1
        })
        .await;
    assert!(made, "the scheduled backup never completed");
    let backup =
        api.state.read_models.read().backups().of_instance("acme", instance, None, None, 10)[0].clone();
    let asked_at = backup.requested_at;

    // Exactly one day after it was asked for: kept.
    let pass = scheduler.pass(asked_at + TimeDelta::days(1)).await;
    assert_eq!(pass.expired, 0, "a backup exactly max_age_days old is kept: {pass:?}");
    // One millisecond later: its deletion is asked for, and its object goes.
    let pass = scheduler.pass(asked_at + TimeDelta::days(1) + TimeDelta::milliseconds(1)).await;
    assert_eq!(pass.expired, 1, "a backup older than max_age_days is deleted: {pass:?}");
    let deleted = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.backups().get("acme", backup.id).is_some_and(|b| b.state == BackupState::Deleted)
        })
        .await;
    assert!(deleted, "never deleted: {:?}", api.state.read_models.read().backups().get("acme", backup.id));
    let found = stack
        .s3
        .store()
        .verify(
            backup.location.as_deref().unwrap(),
            backup.size_bytes.unwrap(),
            backup.sha256.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(found, Verification::Missing, "its object is gone from the store");
}

/// A PostgreSQL base backup is checked against Barman's own catalogue, not against a listing of the same
/// objects its cluster summed up for the size: with the WAL segment its `backup.info` says it needs gone
/// from the archive (its own objects untouched, so their total still matches the report), it shows
/// `verified: false` naming the segment and is refused as a restore source; an intact one is verified.
/// Fails when the worker checks the listing only.
#[tokio::test]
async fn a_postgresql_base_backup_is_verified_against_barman_s_catalogue_and_its_wal() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(s3.target())).await;
    let body = json!({"name": "ledger", "service": "postgresql", "version": "16", "plan": "starter", "cluster": "eu-1"});
    let created = call(&api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let instance: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let [broken, intact] = [completed_backup(&api, instance).await, completed_backup(&api, instance).await];
    let view = |id| api.state.read_models.read().backups().get("acme", id).cloned().expect("its record");
    let store = s3.store();
    let location = view(broken).location.expect("a location");
    let objects = store.list(&location).await.unwrap();
    assert!(objects.iter().any(|o| o.key.ends_with("/backup.info")), "Barman's layout: {objects:?}");
    let server = location.rsplit_once("/base/").unwrap().0.to_owned();
    let wals = store.list(&format!("{server}/wals")).await.unwrap();
    assert_eq!(wals.len(), 2, "one WAL segment per backup: {wals:?}");
    // The first backup's segment (the lower name) goes; its base backup's own objects stay as reported.
    let first_wal = wals.iter().map(|o| o.key.clone()).min().unwrap();
    store.delete(&first_wal).await.unwrap();
    assert_eq!(
        store.verify_prefix(&location, view(broken).size_bytes.unwrap()).await.unwrap(),
        Verification::Matches,
        "a listing still matches the report"
    );

    let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
    let _worker = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        store.clone(),
        jetstream,
    )));
    let checked = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            [broken, intact]
                .iter()
                .all(|id| m.backups().get("acme", *id).is_some_and(|b| b.verified.is_some()))
        })
        .await;
    assert!(checked, "never checked: {:?}", [broken, intact].map(view));
    assert_eq!(view(intact).verified, Some(true), "{:?}", view(intact));
    let shown = view(broken);
    assert_eq!(shown.verified, Some(false), "{shown:?}");
    let segment = first_wal.rsplit('/').next().unwrap();
    let detail = shown.verification_detail.unwrap_or_default();
    assert!(detail.contains(&format!("WAL segment {segment}")), "names the missing segment: {detail}");
    let body = json!({"name": "from-broken", "service": "postgresql", "version": "16", "plan": "starter",
                      "cluster": "eu-1", "restore_from": {"backup_id": broken}});
    let refused = call(&api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains(segment)), "{}", refused.body);
}

/// Deleting a PostgreSQL backup removes exactly its base backup's objects and the WAL no base backup left
/// needs (Barman's retention rule: segments before the oldest remaining backup's `begin_wal`): deleting
/// the oldest of three drops its base and its segment, deleting the newest drops its base only (its
/// segment is on the way from the middle one to now, which a fork may need).
#[tokio::test]
async fn deleting_a_postgresql_backup_removes_its_base_and_the_wal_no_kept_backup_needs() {
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let api = &stack.api;
    let body = json!({"name": "ledger", "service": "postgresql", "version": "16", "plan": "starter", "cluster": "eu-1"});
    let created = call(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let instance: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let backups = [
        completed_backup(api, instance).await,
        completed_backup(api, instance).await,
        completed_backup(api, instance).await,
    ];
    let location = |id| {
        api.state
            .read_models
            .read()
            .backups()
            .get("acme", id)
            .and_then(|b| b.location.clone())
            .expect("a location")
    };
    let store = stack.s3.store();
    let server = location(backups[0]).rsplit_once("/base/").unwrap().0.to_owned();
    let names = |objects: Vec<backup_store::StoredObject>| -> Vec<String> {
        let mut names: Vec<String> =
            objects.into_iter().map(|o| o.key.rsplit('/').next().unwrap().to_owned()).collect();
        names.sort();
        names
    };
    let wal = names(store.list(&format!("{server}/wals")).await.unwrap());
    assert_eq!(wal.len(), 3, "a segment per backup: {wal:?}");
    let delete = |backup: Uuid| async move {
        let path = format!("/v1/projects/acme/instances/{instance}/backups/{backup}");
        let deleted = api
            .call(Method::DELETE, &path, None, &[("authorization", &format!("Bearer {ACME_ADMIN_TOKEN}"))])
            .await;
        assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
        assert!(
            api.wait_for_operation(deleted.operation_id(), "succeeded", WAIT).await,
            "{backup} never deleted"
        );
    };

    delete(backups[0]).await;
    assert!(store.list(&location(backups[0])).await.unwrap().is_empty(), "the oldest base backup is gone");
    for kept in &backups[1..] {
        assert!(!store.list(&location(*kept)).await.unwrap().is_empty(), "another backup's objects stay");
    }
    assert_eq!(names(store.list(&format!("{server}/wals")).await.unwrap()), wal[1..], "only its WAL went");

    delete(backups[2]).await;
    assert!(store.list(&location(backups[2])).await.unwrap().is_empty(), "the newest base backup is gone");
    assert!(!store.list(&location(backups[1])).await.unwrap().is_empty(), "the middle one stays");
    assert_eq!(
        names(store.list(&format!("{server}/wals")).await.unwrap()),
        wal[1..],
        "WAL after the oldest kept backup stays (a fork from it replays it)"
    );
}

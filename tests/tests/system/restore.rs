//! Restores end to end: in place (the instance keeps its id and name; the restore aspect reconciles until
//! the cluster has loaded the backup) and into a new instance (which records its source), also from the
//! backup of a deprovisioned instance; and the backups a restore refuses.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use k8s_sim::server::Faults;
use projections::{Aspect, Health};
use serde_json::{Value, json};
use system_tests::{ACME_ADMIN_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn call(api: &TestApi, method: Method, path: &str, body: Option<&Value>) -> system_tests::Reply {
    // An admin of the project: restoring in place and deleting a backup need it.
    api.call(method, path, body, &[("authorization", &format!("Bearer {ACME_ADMIN_TOKEN}"))]).await
}

async fn provision(api: &TestApi, body: Value) -> (Uuid, system_tests::Reply) {
    let created = call(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    (created.body["instance_id"].as_str().unwrap().parse().unwrap(), created)
}

async fn completed_backup(api: &TestApi, instance: Uuid) -> Uuid {
    let asked =
        call(api, Method::POST, &format!("/v1/projects/acme/instances/{instance}/backups"), None).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let id: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(id, "succeeded", WAIT).await, "the backup never completed");
    id
}

fn restore_health(api: &TestApi, instance: Uuid) -> Option<Health> {
    let model = api.state.read_models.read();
    let view = model.instance("acme", instance)?;
    view.status.aspects.iter().find(|(a, _)| *a == Aspect::Restore).map(|(_, h)| *h)
}

#[tokio::test]
async fn a_backup_is_restored_in_place_and_into_new_instances_even_after_its_instance_is_gone() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let target = s3.target();
    let agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target.clone())).await;
    let mongo = json!({"name": "orders", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let (instance, _) = provision(&api, mongo).await;
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let backup = completed_backup(&api, instance).await;

    // In place, with the agent stopped so the state before the cluster acts is seen for certain.
    agent.abort();
    let _ = agent.await;
    let path = format!("/v1/projects/acme/instances/{instance}/restore");
    let restored = call(&api, Method::POST, &path, Some(&json!({"backup_id": backup}))).await;
    assert_eq!(restored.status, StatusCode::ACCEPTED, "{}", restored.body);
    assert_eq!(restored.body["type"], "restore");
    let reconciling = api
        .state
        .read_models
        .wait_until(WAIT, |_| restore_health(&api, instance) == Some(Health::Reconciling))
        .await;
    assert!(reconciling, "the restore aspect shows reconciling until the cluster has loaded the backup");
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target)).await;
    assert!(
        api.wait_for_operation(restored.operation_id(), "succeeded", WAIT).await,
        "the restore never completed"
    );
    assert_eq!(restore_health(&api, instance), Some(Health::Healthy));
    let shown = call(&api, Method::GET, &format!("/v1/projects/acme/instances/{instance}"), None).await;
    assert_eq!(
        (shown.body["id"].as_str(), shown.body["name"].as_str()),
        (Some(instance.to_string().as_str()), Some("orders"))
    );
    assert_eq!(shown.body["restored_from"]["backup_id"], backup.to_string(), "{}", shown.body);

    // A backup whose object is lost from the store: the restore's download fails, and so does the
    // operation, with the reason.
    let lost = completed_backup(&api, instance).await;
    let location =
        api.state.read_models.read().backups().get("acme", lost).and_then(|b| b.location.clone()).unwrap();
    let store = s3.store();
    store.delete(&location).await.unwrap();
    let doomed = call(&api, Method::POST, &path, Some(&json!({"backup_id": lost}))).await;
    assert_eq!(doomed.status, StatusCode::ACCEPTED, "{}", doomed.body);
    assert!(
        api.wait_for_operation(doomed.operation_id(), "failed", WAIT).await,
        "a restore of a lost object must fail"
    );
    let op =
        call(&api, Method::GET, &format!("/v1/projects/acme/operations/{}", doomed.operation_id()), None)
            .await;
    assert!(op.body.to_string().contains("RestoreFailed"), "{}", op.body);

    // Refused: a backup that failed, one that was deleted, one of another service, one that does not exist.
    sim.set_faults(Faults { failing_jobs: vec!["*".into()], ..Faults::default() });
    let asked =
        call(&api, Method::POST, &format!("/v1/projects/acme/instances/{instance}/backups"), None).await;
    let failed: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(failed, "failed", WAIT).await);
    sim.set_faults(Faults::default());
    let refused = call(&api, Method::POST, &path, Some(&json!({"backup_id": failed}))).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["code"], "backup_not_restorable");
    let unknown = call(&api, Method::POST, &path, Some(&json!({"backup_id": Uuid::now_v7()}))).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unknown.body);
    assert_eq!(unknown.body["errors"][0]["field"], "/backup_id");
    let grafana = json!({"name": "dash", "service": "grafana", "version": "11.6", "plan": "starter", "cluster": "eu-1",
                         "restore_from": {"backup_id": backup}});
    let other_service = call(&api, Method::POST, "/v1/projects/acme/instances", Some(&grafana)).await;
    assert_eq!(other_service.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other_service.body);
    assert_eq!(other_service.body["errors"][0]["rule"], "same_service", "{}", other_service.body);

    // Into a new instance, after the backup's instance was deprovisioned.
    let gone = call(&api, Method::DELETE, &format!("/v1/projects/acme/instances/{instance}"), None).await;
    assert!(api.wait_for_operation(gone.operation_id(), "succeeded", WAIT).await, "never deprovisioned");
    let copy = json!({"name": "orders-copy", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1",
                      "restore_from": {"backup_id": backup}});
    let (new_instance, created) = provision(&api, copy).await;
    assert!(
        api.wait_for_operation(created.operation_id(), "succeeded", WAIT).await,
        "the restored instance never converged"
    );
    let shown = call(&api, Method::GET, &format!("/v1/projects/acme/instances/{new_instance}"), None).await;
    assert_eq!(shown.body["restored_from"]["backup_id"], backup.to_string(), "{}", shown.body);
    assert_eq!(shown.body["restored_from"]["source_instance_id"], instance.to_string());
    assert_eq!(shown.body["status"]["state"], "healthy", "{}", shown.body);

    // A deleted backup is not restored from.
    let deleted =
        call(&api, Method::DELETE, &format!("/v1/projects/acme/instances/{instance}/backups/{backup}"), None)
            .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    let deleting = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.backups().get("acme", backup).is_some_and(|b| b.deletion_operation.is_some()))
        .await;
    assert!(deleting);
    let refused = call(
        &api,
        Method::POST,
        &format!("/v1/projects/acme/instances/{new_instance}/restore"),
        Some(&json!({"backup_id": backup})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
}

/// PostgreSQL through CloudNativePG's Barman Cloud plugin: two base backups land in the real store, a
/// fork to a moment between them bootstraps a new Cluster recovering the first one to that moment and
/// records it, and a moment outside the source's recoverable window is a 422 stating the window.
#[tokio::test]
async fn a_postgresql_fork_to_a_time_between_two_backups_converges_and_records_the_time() {
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let (api, s3, sim) = (&stack.api, &stack.s3, &stack.sim);
    let (ledger, _) = provision(
        api,
        json!({"name": "ledger", "service": "postgresql", "version": "16", "plan": "starter", "cluster": "eu-1"}),
    )
    .await;
    assert!(api.wait_for_state(ledger, Health::Healthy, WAIT).await, "never healthy");

    let before_any = chrono::Utc::now();
    let first = completed_backup(api, ledger).await;
    let between = chrono::Utc::now();
    let second = completed_backup(api, ledger).await;
    // Each is a base backup in the store, verified by the control plane against the reported total size.
    let verified = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            [first, second]
                .iter()
                .all(|id| m.backups().get("acme", *id).is_some_and(|b| b.verified == Some(true)))
        })
        .await;
    let views: Vec<_> = [first, second]
        .iter()
        .map(|id| api.state.read_models.read().backups().get("acme", *id).cloned())
        .collect();
    assert!(verified, "the base backups were never verified: {views:?}");
    let location = views[0].as_ref().and_then(|b| b.location.clone()).expect("where the first is");
    assert!(location.starts_with(&format!("acme/{ledger}/ledger/base/")), "{location}");
    let objects = s3.store().list(&location).await.unwrap();
    assert!(objects.iter().any(|o| o.key.ends_with("/data.tar")), "a base backup: {objects:?}");

    // Outside the window: before the first backup ended, in the future, or now: after the newest base
    // backup's end and within CloudNativePG's archive_timeout of now, whose WAL may not be archived yet.
    // The 422 states the window, which ends at the newest backup's end.
    let newest_end = views[1].as_ref().and_then(|b| b.finished_at).expect("the second backup's end");
    for at in [before_any, chrono::Utc::now() + chrono::TimeDelta::hours(1), chrono::Utc::now()] {
        let body = json!({"name": "too-early", "service": "postgresql", "version": "16", "plan": "starter",
            "cluster": "eu-1", "restore_from": {"instance_id": ledger, "point_in_time": at}});
        let refused = call(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        let error = &refused.body["errors"][0];
        assert_eq!(
            (error["field"].as_str(), error["rule"].as_str()),
            (Some("/restore_from/point_in_time"), Some("recovery_window"))
        );
        assert!(error["detail"].as_str().is_some_and(|d| d.contains("recoverable window, from ")), "{error}");
        let to = format!("to {}", newest_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        assert!(error["detail"].as_str().is_some_and(|d| d.ends_with(&to)), "ends {to}: {error}");
    }
    // Into another major: a base backup starts only on its own.
    let body = json!({"name": "ledger-17", "service": "postgresql", "version": "17", "plan": "starter",
        "cluster": "eu-1", "restore_from": {"instance_id": ledger, "point_in_time": between}});
    let refused = call(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["rule"], "restore_major", "{}", refused.body);

    // The fork: converges, records the source and the time, and its Cluster recovers the first backup.
    let (fork, _) = provision(
        api,
        json!({"name": "ledger-fork", "service": "postgresql", "version": "16", "plan": "starter", "cluster": "eu-1",
               "restore_from": {"instance_id": ledger, "point_in_time": between}}),
    )
    .await;
    assert!(api.wait_for_state(fork, Health::Healthy, WAIT).await, "the fork never became healthy");
    let shown = call(api, Method::GET, &format!("/v1/projects/acme/instances/{fork}"), None).await;
    let restored = &shown.body["restored_from"];
    assert_eq!(restored["backup_id"], first.to_string(), "the newest backup before the time: {}", shown.body);
    assert_eq!(restored["source_instance_id"], ledger.to_string());
    let recorded: chrono::DateTime<chrono::Utc> =
        restored["point_in_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(recorded.timestamp(), between.timestamp(), "the target time is recorded");
    let cluster = {
        let store = sim.store();
        let ty = store.resource_type("postgresql.cnpg.io", "v1", "clusters").unwrap();
        store.get(&ty, "cp-acme", "ledger-fork").expect("the fork's Cluster")
    };
    let target = &cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"];
    assert_eq!(target["backupID"].as_str(), location.rsplit('/').next(), "{cluster}");
    assert_eq!(
        target["targetTime"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .map(|t| t.timestamp()),
        Some(between.timestamp())
    );
    assert_eq!(cluster["spec"]["externalClusters"][0]["plugin"]["parameters"]["serverName"], "ledger");

    // PostgreSQL is not restored in place: CloudNativePG restores only into a new cluster.
    let body = json!({"backup_id": second});
    let refused =
        call(api, Method::POST, &format!("/v1/projects/acme/instances/{ledger}/restore"), Some(&body)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["rule"], "restore_in_place");
}

/// InfluxDB (`influx backup`, then a Job replacing the buckets with `influx restore`) and Grafana (a copy of its
/// SQLite database, loaded back by its StatefulSet's init container as the pods roll): backed up into the
/// real store, verified, and restored in place; a Grafana restore whose object is gone fails.
#[tokio::test]
async fn influxdb_and_grafana_are_backed_up_verified_and_restored_in_place() {
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let (api, s3) = (&stack.api, &stack.s3);
    let mut grafana = None;
    for (name, service, version) in [("metrics", "influxdb", "2.7"), ("dash", "grafana", "11.6")] {
        let body = json!({"name": name, "service": service, "version": version, "plan": "starter", "cluster": "eu-1"});
        let (instance, _) = provision(api, body).await;
        assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "{service} never healthy");
        let backup = completed_backup(api, instance).await;
        let verified = api
            .state
            .read_models
            .wait_until(WAIT, |m| m.backups().get("acme", backup).is_some_and(|b| b.verified == Some(true)))
            .await;
        assert!(verified, "{service}: the object is not in the store as reported");

        let path = format!("/v1/projects/acme/instances/{instance}/restore");
        let restored = call(api, Method::POST, &path, Some(&json!({"backup_id": backup}))).await;
        assert_eq!(restored.status, StatusCode::ACCEPTED, "{}", restored.body);
        assert!(
            api.wait_for_operation(restored.operation_id(), "succeeded", WAIT).await,
            "{service}: the restore never completed"
        );
        assert_eq!(restore_health(api, instance), Some(Health::Healthy), "{service}");
        let shown = call(api, Method::GET, &format!("/v1/projects/acme/instances/{instance}"), None).await;
        assert_eq!(shown.body["name"], name);
        assert_eq!(shown.body["restored_from"]["backup_id"], backup.to_string(), "{}", shown.body);
        if service == "grafana" {
            grafana = Some(instance);
        }
    }

    // Grafana's init container downloads the database: without the object the pods do not start, and
    // the restore fails with the reason.
    let dash = grafana.expect("made above");
    let lost = completed_backup(api, dash).await;
    // Verified first: lost before, the control plane would refuse the restore (409) instead.
    let verified = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.backups().get("acme", lost).is_some_and(|b| b.verified == Some(true)))
        .await;
    assert!(verified, "never verified");
    let location =
        api.state.read_models.read().backups().get("acme", lost).and_then(|b| b.location.clone()).unwrap();
    s3.store().delete(&location).await.unwrap();
    let path = format!("/v1/projects/acme/instances/{dash}/restore");
    let doomed = call(api, Method::POST, &path, Some(&json!({"backup_id": lost}))).await;
    assert_eq!(doomed.status, StatusCode::ACCEPTED, "{}", doomed.body);
    assert!(
        api.wait_for_operation(doomed.operation_id(), "failed", WAIT).await,
        "a restore of a lost object must fail"
    );
}

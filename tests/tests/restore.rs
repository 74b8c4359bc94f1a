//! Restores end to end: in place (the instance keeps its id and name; the restore aspect reconciles until
//! the cluster has loaded the backup) and into a new instance (which records its source), also from the
//! backup of a deprovisioned instance; and the backups a restore refuses.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use k8s_sim::server::Faults;
use projections::{Aspect, Health};
use serde_json::{Value, json};
use system_tests::{ACME_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn call(api: &TestApi, method: Method, path: &str, body: Option<&Value>) -> system_tests::Reply {
    api.call(method, path, body, &[("authorization", &format!("Bearer {ACME_EDITOR_TOKEN}"))]).await
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

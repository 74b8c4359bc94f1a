//! Status over HTTP: desired state compared with what a cluster's agent observes in a simulated cluster.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use k8s_sim::{Simulator, server::Faults};
use projections::Health;
use serde_json::json;
use system_tests::TestApi;
use uuid::Uuid;

const CONVERGE: Duration = Duration::from_secs(30);

async fn with_agent(api: &TestApi, cluster: &str, ready_delay: Duration) -> Simulator {
    with_stoppable_agent(api, cluster, ready_delay).await.0
}

/// A simulated cluster, its address, and its running agent, which a test stops to see for certain what
/// the API shows before the cluster applies a change (rather than racing the agent to it).
async fn with_stoppable_agent(
    api: &TestApi,
    cluster: &str,
    ready_delay: Duration,
) -> (Simulator, std::net::SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (sim, address) = system_tests::cluster::simulator(ready_delay).await;
    let agent = system_tests::cluster::agent(api, cluster, address).await;
    (sim, address, agent)
}

async fn stop(agent: tokio::task::JoinHandle<anyhow::Result<()>>) {
    agent.abort();
    let _ = agent.await;
}

#[tokio::test]
async fn status_goes_reconciling_healthy_error_healthy_and_a_plan_change_touches_resources_only() {
    let api = TestApi::start().await;
    let (sim, address, agent) = with_stoppable_agent(&api, "eu-1", Duration::from_millis(1500)).await;
    let body =
        json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}");

    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["state"], "reconciling", "{}", got.body);

    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["state"], "healthy");
    assert_eq!(got.body["observed"]["phase"], "ready");
    assert_eq!(got.body["observed"]["running_version"], "7.0");
    assert_eq!(got.body["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(got.body["status"]["conditions"][0]["status"], "True");
    let listed = api.call(Method::GET, "/v1/projects/acme/instances?state=healthy", None, &[]).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    sim.set_faults(Faults { crash_loop: vec!["db".into()], ..Faults::default() });
    assert!(api.wait_for_state(id, Health::Error, CONVERGE).await, "fault not reported");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["reason"], "CrashLoopBackOff");
    assert_eq!(got.body["status"]["conditions"][0]["reason"], "CrashLoopBackOff");
    sim.set_faults(Faults::default());
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "did not recover");

    stop(agent).await;
    let changed = api.call(Method::PATCH, &path, Some(&json!({"plan": "standard"})), &[]).await;
    assert_eq!(changed.status, StatusCode::ACCEPTED);
    let got = api.get_after(&path, [&changed]).await;
    assert_eq!(got.body["status"]["state"], "reconciling", "{}", got.body["status"]);
    assert_eq!(
        got.body["status"]["aspects"],
        json!({"version": "healthy", "resources": "reconciling", "configuration": "healthy",
            "network_access": "healthy", "credentials": "healthy", "restore": "healthy", "users": "healthy"})
    );
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "plan change never observed");
}

/// Provisions MongoDB instance `db` on eu-1 through the API and waits until it is healthy.
async fn provision_healthy_mongodb(api: &TestApi) -> Uuid {
    let body =
        json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy");
    id
}

#[tokio::test]
async fn an_operation_succeeds_only_once_observed_and_a_failed_one_carries_the_agents_reason() {
    let api = TestApi::start().await;
    let (sim, address, agent) = with_stoppable_agent(&api, "eu-1", Duration::from_millis(1000)).await;
    let id = provision_healthy_mongodb(&api).await;
    let path = format!("/v1/projects/acme/instances/{id}");

    // A plan change: in progress until the agent has observed its generation (the agent is stopped while
    // the change is made, so "in progress" is seen for certain), then succeeded.
    stop(agent).await;
    let changed = api.call(Method::PATCH, &path, Some(&json!({"plan": "standard"})), &[]).await;
    assert_eq!(changed.status, StatusCode::ACCEPTED);
    assert_eq!(changed.body["state"], "in_progress");
    let operation: Uuid = changed.body["id"].as_str().unwrap().parse().unwrap();
    let operation_path = format!("/v1/projects/acme/operations/{operation}");
    let polled = api.get_after(&operation_path, [&changed]).await;
    assert_eq!(polled.body["state"], "in_progress", "{}", polled.body);
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    assert!(api.wait_for_operation(operation, "succeeded", CONVERGE).await, "plan change never succeeded");
    let instance = api.call(Method::GET, &path, None, &[]).await;
    let observed = instance.body["observed"]["observed_generation"].as_u64().unwrap();
    assert!(
        observed >= changed.version(),
        "succeeded while the agent had observed generation {observed} of {}",
        changed.version()
    );
    assert_eq!(api.call(Method::GET, &operation_path, None, &[]).await.body["state"], "succeeded");

    // An upgrade while every workload crash-loops: failed with the agent's reason; the instance (an older
    // generation) is still usable and the change may be repeated. It succeeds once the fault clears.
    sim.set_faults(Faults { crash_loop: vec!["db".into()], ..Faults::default() });
    let upgrade = api.call(Method::PATCH, &path, Some(&json!({"version": "8.0"})), &[]).await;
    let operation: Uuid = upgrade.body["id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(operation, "failed", CONVERGE).await, "the upgrade never failed");
    let failed = api.call(Method::GET, &format!("/v1/projects/acme/operations/{operation}"), None, &[]).await;
    assert_eq!(failed.body["state"], "failed", "{}", failed.body);
    assert_eq!(failed.body["error"]["reason"], "CrashLoopBackOff", "{}", failed.body);
    assert_eq!(failed.body["error"]["instance_usable"], true);
    assert_eq!(failed.body["error"]["update_repeatable"], true);
    sim.set_faults(Faults::default());
    assert!(
        api.wait_for_operation(operation, "succeeded", CONVERGE).await,
        "the upgrade never succeeded after the fault"
    );
}

/// The ManagedInstance is a mirror: deleting it by hand in the cluster changes nothing the customer owns.
/// The API shows the drift the agent healed beside a status that stays healthy.
#[tokio::test]
async fn a_hand_deleted_managed_instance_shows_as_healed_drift_and_the_instance_stays_healthy() {
    let api = TestApi::start().await;
    let sim = with_agent(&api, "eu-1", Duration::from_millis(50)).await;
    let id = provision_healthy_mongodb(&api).await;
    {
        let mut store = sim.store();
        let ty = store.resource_type("cp.example.com", "v1alpha1", "managedinstances").unwrap();
        store.delete(&ty, "cp-acme", "db").expect("delete the mirror");
    }
    let healed = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| m.instance("acme", id).is_some_and(|v| v.last_drift.is_some()))
        .await;
    assert!(healed, "no drift recorded");
    let got = api.call(Method::GET, &format!("/v1/projects/acme/instances/{id}"), None, &[]).await;
    assert_eq!(got.body["last_drift"]["objects"], json!(["ManagedInstance/db"]), "{}", got.body);
    assert_eq!(got.body["status"]["state"], "healthy", "{}", got.body);
    let store = sim.store();
    let claims = store.resource_type("", "v1", "persistentvolumeclaims").unwrap();
    assert!(store.get(&claims, "cp-acme", "data-db-0").is_some(), "the data volume is kept");
}

/// Deprovisioning end to end, as a customer sees it: DELETE answers an operation in progress; the agent
/// deletes every object of the instance (workload, service, configuration, credentials, claims and the
/// mirror) and reports `InstanceRemoved`; only then does the operation succeed, and the instance shows
/// the `Deleted` condition.
#[tokio::test]
async fn a_deprovision_removes_every_object_then_succeeds_with_the_deleted_condition() {
    let api = TestApi::start().await;
    let sim = with_agent(&api, "eu-1", Duration::from_millis(50)).await;
    let id = provision_healthy_mongodb(&api).await;
    let path = format!("/v1/projects/acme/instances/{id}");
    let owned = |store: &k8s_sim::store::Store| {
        let mut found = Vec::new();
        for (group, version, plural, name) in [
            ("apps", "v1", "statefulsets", "db"),
            ("", "v1", "services", "db"),
            ("", "v1", "configmaps", "db-config"),
            ("", "v1", "secrets", "db-credentials"),
            ("", "v1", "persistentvolumeclaims", "data-db-0"),
            ("cp.example.com", "v1alpha1", "managedinstances", "db"),
        ] {
            let ty = store.resource_type(group, version, plural).expect("known type");
            if store.get(&ty, "cp-acme", name).is_some() {
                found.push(format!("{plural}/{name}"));
            }
        }
        found
    };
    assert_eq!(owned(&sim.store()).len(), 6, "every object exists before: {:?}", owned(&sim.store()));

    let deleted = api.call(Method::DELETE, &path, None, &[]).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert_eq!(deleted.body["type"], "deprovision");
    assert_eq!(deleted.body["state"], "in_progress");
    let operation: Uuid = deleted.body["id"].as_str().unwrap().parse().unwrap();

    assert!(
        api.wait_for_operation(operation, "succeeded", CONVERGE).await,
        "the deprovision never succeeded"
    );
    assert!(owned(&sim.store()).is_empty(), "objects left after success: {:?}", owned(&sim.store()));
    let view = api.state.read_models.read().instance("acme", id).cloned().expect("the record stays");
    assert!(view.removed, "succeeded before the agent reported InstanceRemoved");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["lifecycle"], "deprovisioning", "{}", got.body);
    let conditions = got.body["status"]["conditions"].as_array().unwrap();
    let deleted_condition = conditions.iter().find(|c| c["type"] == "Deleted").expect("a Deleted condition");
    assert_eq!(deleted_condition["status"], "True", "{}", got.body["status"]);
    // Repeating the DELETE answers the same operation, now succeeded.
    let again = api.call(Method::DELETE, &path, None, &[]).await;
    assert_eq!(again.body["id"], deleted.body["id"]);
    assert_eq!(again.body["state"], "succeeded", "{}", again.body);
}

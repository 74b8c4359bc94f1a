//! A customer reads the credentials of their instance, fetched from the cluster through its agent.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use projections::Health;
use serde_json::json;
use system_tests::{ACME_EDITOR_TOKEN, ACME_VIEWER_TOKEN, OTHER_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A key of a Secret in the simulated cluster, decoded.
fn secret_value(sim: &k8s_sim::Simulator, name: &str, key: &str) -> String {
    let store = sim.store();
    let secrets = store.resource_type("", "v1", "secrets").expect("secrets");
    let secret = store.get(&secrets, "cp-acme", name).unwrap_or_else(|| panic!("no Secret {name}"));
    let data = secret["data"][key].as_str().unwrap_or_else(|| panic!("no {key} in Secret {name}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
}

async fn provision(api: &TestApi, name: &str, service: &str, version: &str) -> Uuid {
    let body =
        json!({"name": name, "service": service, "version": version, "plan": "starter", "cluster": "eu-1"});
    let editor = bearer(ACME_EDITOR_TOKEN);
    let created = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor)])
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    // Generous: on a loaded machine (CI beside other builds) a simulated rollout can take seconds.
    assert!(api.wait_for_state(id, Health::Healthy, Duration::from_secs(90)).await, "{name} never healthy");
    id
}

async fn read_credentials(api: &TestApi, id: Uuid) -> serde_json::Value {
    let path = format!("/v1/projects/acme/instances/{id}/credentials");
    let read = api.call(Method::GET, &path, None, &[("authorization", &bearer(ACME_EDITOR_TOKEN))]).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    read.body
}

async fn rotate(api: &TestApi, id: Uuid, token: &str) -> system_tests::Reply {
    let path = format!("/v1/projects/acme/instances/{id}/credentials/rotate");
    api.call(Method::POST, &path, None, &[("authorization", &bearer(token))]).await
}

#[tokio::test]
async fn a_rotation_gives_a_new_password_that_the_cluster_holds_and_the_old_one_stops_matching() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    // A StatefulSet service (the agent runs the service's own password change as a Job) and PostgreSQL
    // (CloudNativePG's application Secret, which the operator applies).
    for (name, service, version, secret) in
        [("dash", "grafana", "11.6", "dash-credentials"), ("orders", "postgresql", "16", "orders-app")]
    {
        let id = provision(&api, name, service, version).await;
        let before = read_credentials(&api, id).await;
        assert_eq!(
            before["password"],
            secret_value(&sim, secret, "password"),
            "{service}: the cluster's password"
        );

        let viewer = rotate(&api, id, ACME_VIEWER_TOKEN).await;
        assert_eq!(viewer.status, StatusCode::FORBIDDEN, "a viewer may not rotate");
        let other = rotate(&api, id, OTHER_EDITOR_TOKEN).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "another project's token finds nothing");

        let rotated = rotate(&api, id, ACME_EDITOR_TOKEN).await;
        assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
        assert_eq!(rotated.body["type"], "rotate_credentials", "{}", rotated.body);
        assert!(
            !rotated.body.to_string().contains(before["password"].as_str().unwrap()),
            "no password in the answer"
        );
        let operation = rotated.operation_id();
        assert!(
            api.wait_for_operation(operation, "succeeded", Duration::from_secs(30)).await,
            "{service}: the rotation never succeeded"
        );
        let after = read_credentials(&api, id).await;
        let held = secret_value(&sim, secret, "password");
        assert_eq!(
            after["password"],
            held.as_str(),
            "{service}: the new password is the one the cluster holds"
        );
        assert_ne!(after["password"], before["password"], "{service}: a new password");
        assert_ne!(
            held,
            before["password"].as_str().unwrap(),
            "{service}: the old password no longer matches"
        );
        assert_eq!(after["username"], before["username"]);
        if service == "postgresql" {
            // Every connection string CloudNativePG's Secret offers carries the new password.
            assert!(secret_value(&sim, secret, "uri").contains(&held), "the uri has the new password");
            assert!(!secret_value(&sim, secret, "pgpass").contains(before["password"].as_str().unwrap()));
        } else {
            // The Job is gone once its work is done, and so is the pending password.
            let store = sim.store();
            let jobs = store.resource_type("batch", "v1", "jobs").expect("jobs");
            assert!(store.list(&jobs, Some("cp-acme"), None).is_empty(), "the rotation Job is removed");
            let secrets = store.resource_type("", "v1", "secrets").unwrap();
            let secret = store.get(&secrets, "cp-acme", secret).unwrap();
            assert!(secret["data"]["next-password"].is_null(), "no pending password left: {secret}");
        }
        let instance = api
            .call(
                Method::GET,
                &format!("/v1/projects/acme/instances/{id}"),
                None,
                &[("authorization", &bearer(ACME_EDITOR_TOKEN))],
            )
            .await;
        assert_eq!(instance.body["status"]["state"], "healthy", "{}", instance.body);
    }
}

#[tokio::test]
async fn a_rotation_the_service_refuses_fails_with_the_reason_and_the_old_password_stays() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let id = provision(&api, "metrics", "influxdb", "2.7").await;
    let before = read_credentials(&api, id).await;
    sim.set_faults(k8s_sim::server::Faults {
        failing_jobs: vec!["*".into()],
        ..k8s_sim::server::Faults::default()
    });
    let rotated = rotate(&api, id, ACME_EDITOR_TOKEN).await;
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    let operation = rotated.operation_id();
    assert!(
        api.wait_for_operation(operation, "failed", Duration::from_secs(30)).await,
        "a rotation whose Job fails must fail"
    );
    let path = format!("/v1/projects/acme/operations/{operation}");
    let failed = api.call(Method::GET, &path, None, &[("authorization", &bearer(ACME_EDITOR_TOKEN))]).await;
    assert!(
        failed.body.to_string().contains("CredentialsRotationFailed"),
        "the reason is named: {}",
        failed.body
    );
    let after = read_credentials(&api, id).await;
    assert_eq!(
        after["password"], before["password"],
        "the service still takes the old password, so it is kept"
    );
    assert_eq!(secret_value(&sim, "metrics-credentials", "password"), before["password"].as_str().unwrap());
}

#[tokio::test]
async fn an_editor_reads_the_credentials_the_cluster_holds_and_nobody_else_does() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let editor = bearer(ACME_EDITOR_TOKEN);
    let body = json!({"name": "dash", "service": "grafana", "version": "11.6", "plan": "starter", "cluster": "eu-1"});
    let created = api
        .call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[("authorization", &editor)])
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, Duration::from_secs(30)).await, "never healthy");
    let path = format!("/v1/projects/acme/instances/{id}/credentials");

    let read = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(read.body["username"], "admin");
    assert_eq!(read.body["host"], "dash.cp-acme.svc");
    assert_eq!(read.body["port"], 3000);
    let in_cluster = secret_value(&sim, "dash-credentials", "password");
    assert_eq!(read.body["password"], in_cluster.as_str(), "the password the workload was given");

    let viewer = api.call(Method::GET, &path, None, &[("authorization", &bearer(ACME_VIEWER_TOKEN))]).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN, "a viewer may not read credentials");
    let other = api.call(Method::GET, &path, None, &[("authorization", &bearer(OTHER_EDITOR_TOKEN))]).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "another project's token finds nothing");

    agent.abort();
    let _ = agent.await;
    let away = api.call(Method::GET, &path, None, &[("authorization", &editor)]).await;
    assert_eq!(away.status, StatusCode::SERVICE_UNAVAILABLE, "{}", away.body);
    assert!(away.body["detail"].as_str().is_some_and(|d| d.contains("eu-1")), "{}", away.body);
    assert!(!away.body.to_string().contains(&in_cluster), "no password in an error");
}

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
    let in_cluster = {
        let store = sim.store();
        let secrets = store.resource_type("", "v1", "secrets").expect("secrets");
        let secret = store.get(&secrets, "cp-acme", "dash-credentials").expect("the Secret");
        secret["stringData"]["password"].as_str().map(str::to_owned).unwrap_or_else(|| {
            let data = secret["data"]["password"].as_str().expect("a password");
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
        })
    };
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

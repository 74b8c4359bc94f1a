//! Create, get, update, list and delete over HTTP; the stream holds what the commands said.

use axum::http::{Method, StatusCode};
use domain::InstanceEvent;
use serde_json::json;
use streams::{envelope::headers, instances::aggregate_id};
use system_tests::TestApi;

#[tokio::test]
async fn an_instance_lives_through_create_get_update_list_and_delete() {
    let api = TestApi::start().await;

    let created = api.provision("acme", "orders-db").await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    assert_eq!(created.body["type"], "provision");
    // No cluster agent runs in this test, so nothing observes the instance: the operation stays in progress.
    assert_eq!(created.body["state"], "in_progress");
    assert_eq!(created.body["instance_version"], 1);
    assert_eq!(created.header("retry-after"), Some("1"));
    let id = created.body["instance_id"].as_str().unwrap().to_owned();
    let operation_url = created.header("location").unwrap().to_owned();
    let path = format!("/v1/projects/acme/instances/{id}");

    // the operation can be fetched again
    let operation = api.call(Method::GET, &operation_url, None, &[]).await;
    assert_eq!(operation.status, StatusCode::OK);
    assert_eq!(operation.body["id"], created.body["id"]);

    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.version(), 1);
    assert_eq!(got.body["name"], "orders-db");
    assert_eq!(got.body["storage_gib"], 10);
    assert_eq!(got.body["resources"]["replicas"], 1);
    assert!(["eu-1", "eu-2"].contains(&got.body["cluster"].as_str().unwrap()));

    // A dynamic parameter: a restart one would be held for the maintenance window (`maintenance.rs`).
    let patch = json!({"version": "17", "plan": "standard", "config": {"work_mem_kib": 8192}});
    let updated = api.call(Method::PATCH, &path, Some(&patch), &[("if-match", "\"1\"")]).await;
    assert_eq!(updated.status, StatusCode::ACCEPTED, "{:?}", updated.body);
    assert_eq!(updated.version(), 4);
    let got = api.get_after(&path, [&updated]).await;
    assert_eq!((got.body["version"].as_str(), got.body["plan"].as_str()), (Some("17"), Some("standard")));
    assert_eq!(got.body["storage_gib"], 50);
    assert_eq!(got.body["config"]["work_mem_kib"], 8192);

    let second = api.provision("acme", "metrics-db").await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    let list = api.get_after("/v1/projects/acme/instances?limit=1", [&second]).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    let token = list.body["next_page_token"].as_str().unwrap();
    let rest = api
        .call(Method::GET, &format!("/v1/projects/acme/instances?limit=1&page_token={token}"), None, &[])
        .await;
    assert_eq!(rest.body["items"][0]["name"], "metrics-db");
    assert!(rest.body.get("next_page_token").is_none());
    let other = api.call(Method::GET, "/v1/projects/other/instances", None, &[]).await;
    assert_eq!(other.body["items"].as_array().unwrap().len(), 0);

    let deleted = api.call(Method::DELETE, &path, None, &[]).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    assert_eq!(deleted.body["type"], "deprovision");
    let again = api.call(Method::DELETE, &path, None, &[]).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], deleted.body["id"], "a repeated DELETE answers with the first operation");
    let got = api.get_after(&path, [&deleted]).await;
    assert_eq!(got.body["lifecycle"], "deprovisioning");
    let refused = api.call(Method::PATCH, &path, Some(&json!({"description": "x"})), &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);

    // The stream: one message per command, events in command order, with the documented headers.
    let history =
        api.state.commands.store().history(&aggregate_id("acme", id.parse().unwrap())).await.unwrap();
    let types: Vec<&str> = history.iter().map(|(_, e, _)| e.type_name()).collect();
    assert_eq!(
        types,
        [
            "InstanceProvisioned",
            "VersionUpgraded",
            "PlanChanged",
            "ConfigurationChanged",
            "DeprovisioningStarted"
        ]
    );
    let operations: Vec<&str> = history.iter().map(|(_, _, m)| m.operation.as_str()).collect();
    assert_eq!(operations, ["provision", "update", "update", "update", "deprovision"]);
    assert!(matches!(history[0].1, InstanceEvent::InstanceProvisioned(ref p) if p.name == "orders-db"));
    let update = api.state.events.direct_get(2).await.unwrap();
    assert_eq!(
        update.subject.as_str(),
        format!("cp.evt.{}.acme.{id}", got.body["cluster"].as_str().unwrap())
    );
    let header = |name: &str| update.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        header(headers::EVENT_TYPE).as_deref(),
        Some("VersionUpgraded,PlanChanged,ConfigurationChanged")
    );
    assert_eq!(header(headers::SCHEMA_VERSION).as_deref(), Some("1,1,3"), "ConfigurationChanged is schema 3");
    assert_eq!(header(headers::COMMAND_ID), Some(updated.body["id"].as_str().unwrap().to_owned()));
    assert_eq!(header(headers::OPERATION).as_deref(), Some("update"));
    assert_eq!(header(headers::AGGREGATE_VERSION).as_deref(), Some("4"));
    assert!(header(headers::CORRELATION_ID).is_some(), "the request id is the correlation id");
    assert!(header(headers::TIME).is_some());
}

#[tokio::test]
async fn deletion_protection_answers_409_at_once() {
    let api = TestApi::start().await;
    let body = json!({"name": "keep", "service": "grafana", "version": "11.6", "plan": "starter", "deletion_protection": true});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    let refused = api.call(Method::DELETE, &path, None, &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.body["code"], "deletion_protected");
    assert_eq!(refused.body["errors"][0]["field"], "/deletion_protection");
    let off = api.call(Method::PATCH, &path, Some(&json!({"deletion_protection": false})), &[]).await;
    assert_eq!(off.status, StatusCode::ACCEPTED);
    assert_eq!(api.call(Method::DELETE, &path, None, &[]).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn names_are_unique_per_project_and_free_again_after_deprovision() {
    let api = TestApi::start().await;
    let first = api.provision("acme", "db").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let taken = api.provision("acme", "db").await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.body["code"], "name_taken");
    assert_eq!(taken.body["errors"][0]["field"], "/name");
    assert_eq!(api.provision("other", "db").await.status, StatusCode::ACCEPTED, "another project may use it");
    let path = format!("/v1/projects/acme/instances/{}", first.body["instance_id"].as_str().unwrap());
    assert_eq!(api.call(Method::DELETE, &path, None, &[]).await.status, StatusCode::ACCEPTED);
    assert_eq!(api.provision("acme", "db").await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn placement_follows_the_requested_cluster_or_region() {
    let api = TestApi::start().await;
    let pinned =
        json!({"name": "a", "service": "mongodb", "version": "7.0", "plan": "standard", "cluster": "eu-2"});
    let reply = api.call(Method::POST, "/v1/projects/acme/instances", Some(&pinned), &[]).await;
    let id = reply.body["instance_id"].as_str().unwrap();
    let got = api.call(Method::GET, &format!("/v1/projects/acme/instances/{id}"), None, &[]).await;
    assert_eq!(got.body["cluster"], "eu-2");
    let unknown =
        json!({"name": "b", "service": "mongodb", "version": "7.0", "plan": "standard", "cluster": "mars-1"});
    let reply = api.call(Method::POST, "/v1/projects/acme/instances", Some(&unknown), &[]).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["errors"][0]["field"], "/cluster");
    let region =
        json!({"name": "c", "service": "mongodb", "version": "7.0", "plan": "standard", "region": "us-east"});
    let reply = api.call(Method::POST, "/v1/projects/acme/instances", Some(&region), &[]).await;
    assert_eq!(reply.body["errors"][0]["field"], "/region");
}

#[tokio::test]
async fn the_openapi_document_and_probes_are_served() {
    let api = TestApi::start().await;
    let spec = api.call(Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(spec.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/projects/{project}/instances",
        "/v1/projects/{project}/instances/{id}",
        "/v1/projects/{project}/operations/{operation_id}",
    ] {
        assert!(spec.body["paths"].get(path).is_some(), "{path} is documented");
    }
    let docs = api.call(Method::GET, "/docs/", None, &[]).await;
    assert_eq!(docs.status, StatusCode::OK);
    let initializer = tower::ServiceExt::oneshot(
        api.router(),
        axum::http::Request::get("/docs/swagger-initializer.js").body(axum::body::Body::empty()).unwrap(),
    );
    let initializer = initializer.await.unwrap();
    assert_eq!(initializer.status(), StatusCode::OK);
    let script = http_body_util::BodyExt::collect(initializer.into_body()).await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&script).contains("/openapi.json"),
        "the UI reads the document as served"
    );
    assert_eq!(api.call(Method::GET, "/healthz", None, &[]).await.status, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/readyz", None, &[]).await.status, StatusCode::OK);
    let missing = api.call(Method::GET, "/v1/nothing", None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let api = TestApi::start().await;
    let created = api.provision("acme", "db").await;
    let path = format!("/v1/projects/acme/instances/{}", created.body["instance_id"].as_str().unwrap());
    assert_eq!(api.get_after(&path, [&created]).await.status, StatusCode::OK);
    let text = api.metrics_text().await;
    for line in [
        r#"cp_api_requests_total{method="POST",route="/v1/projects/{project}/instances",status="202"} 1"#,
        r#"cp_api_requests_total{method="GET",route="/v1/projects/{project}/instances/{id}",status="200"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
    }
    let sequence: u64 = created.header("cp-stream-sequence").unwrap().parse().unwrap();
    let shown: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cp_api_read_model_sequence "))
        .and_then(|v| v.parse().ok())
        .expect("read model sequence gauge");
    assert!(shown >= sequence, "the gauge shows {shown}, the read models include {sequence}");
}

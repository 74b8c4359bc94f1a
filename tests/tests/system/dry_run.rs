//! The agent's dry run over a cluster's history: on a stream the current renderer produced it reports no
//! difference; with a changed renderer it names exactly the objects that renderer changes.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use cluster_agent::{
    crd::ManagedInstance,
    dry_run::{self, Change},
    render::{self, Child, ChildKind, backup::StoreTarget},
};
use projections::Health;
use serde_json::json;
use system_tests::TestApi;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn provision(api: &TestApi, name: &str, service: &str, version: &str) -> Uuid {
    let body =
        json!({"name": name, "service": service, "version": version, "plan": "starter", "cluster": "eu-1"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    created.body["instance_id"].as_str().unwrap().parse().unwrap()
}

/// The current renderer, but a MongoDB instance's Service carries one more label.
fn relabelled_mongodb_services(mi: &ManagedInstance, store: Option<&StoreTarget>) -> Vec<Child> {
    let mut children = render::render(mi, store);
    if mi.spec.service == "mongodb" {
        for child in children.iter_mut().filter(|c| c.kind == ChildKind::Service) {
            child.object["metadata"]["labels"]["example.com/tier"] = json!("gold");
        }
    }
    children
}

#[tokio::test]
async fn a_dry_run_names_exactly_the_objects_a_changed_renderer_would_change() {
    let api = TestApi::start().await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let postgres = provision(&api, "orders", "postgresql", "16").await;
    let mongo = provision(&api, "catalog", "mongodb", "6.0").await;
    for id in [postgres, mongo] {
        assert!(api.wait_for_state(id, Health::Healthy, WAIT).await, "{id} never healthy");
    }
    // A later generation of one of them: the dry run renders the one last applied.
    let path = format!("/v1/projects/acme/instances/{mongo}");
    let upgraded = api.call(Method::PATCH, &path, Some(&json!({"version": "7.0", "config": {}})), &[]).await;
    assert_eq!(upgraded.status, StatusCode::ACCEPTED, "{}", upgraded.body);
    assert!(api.wait_for_operation(upgraded.operation_id(), "succeeded", WAIT).await, "upgrade never done");

    let events = api.state.events.clone();
    let range = streams::history::HistoryRange { after: 0, until: None, limit: usize::MAX };
    let messages = streams::history::read_cluster_history(&events, "eu-1", range).await.expect("history");

    let same = dry_run::compare(&messages, None, render::render);
    assert_eq!((same.compared, same.without_report, same.unreadable), (2, 0, 0), "{same:?}");
    assert!(same.differences.is_empty(), "the renderer that produced the stream changes nothing: {same:?}");
    assert!(dry_run::render_text(&same).contains("2 instances compared, 0 would change"));

    let changed = dry_run::compare(&messages, None, relabelled_mongodb_services);
    assert_eq!(changed.differences.len(), 1, "only the MongoDB instance changes: {changed:?}");
    let instance = &changed.differences[0];
    assert_eq!((instance.instance_id, instance.name.as_str(), instance.generation), (mongo, "catalog", 2));
    let services: Vec<String> = messages_services(&render::render, &instance.name);
    let objects: Vec<(String, Change)> =
        instance.objects.iter().map(|o| (o.object.clone(), o.change)).collect();
    assert_eq!(objects, services.into_iter().map(|s| (s, Change::Changed)).collect::<Vec<_>>());

    // A renderer that stops rendering an object reports it removed.
    let without_services = |mi: &ManagedInstance, store: Option<&StoreTarget>| {
        let mut children = render::render(mi, store);
        if mi.spec.service == "mongodb" {
            children.retain(|c| c.kind != ChildKind::Service);
        }
        children
    };
    let removed = dry_run::compare(&messages, None, without_services);
    assert!(
        removed.differences[0]
            .objects
            .iter()
            .all(|o| o.change == Change::Removed && o.object.starts_with("Service/"))
    );
}

/// The `Service/<name>` objects the renderer makes for a MongoDB instance called `name` (so the test
/// does not hard-code the renderer's naming).
fn messages_services(
    render: &dyn Fn(&ManagedInstance, Option<&StoreTarget>) -> Vec<Child>,
    name: &str,
) -> Vec<String> {
    let mi: ManagedInstance = serde_json::from_value(json!({
        "apiVersion": "cp.example.com/v1alpha1", "kind": "ManagedInstance",
        "metadata": {"name": name, "namespace": "acme"},
        "spec": {"instanceId": Uuid::nil().to_string(), "project": "acme", "service": "mongodb", "version": "7.0",
                 "plan": "starter", "cpuMillis": 500, "memoryMib": 512, "replicas": 1, "storageGib": 10,
                 "config": {}, "generation": 2, "acl": []}
    }))
    .expect("a ManagedInstance");
    let mut services: Vec<String> = render(&mi, None)
        .into_iter()
        .filter(|c| c.kind == ChildKind::Service)
        .map(|c| format!("Service/{}", c.name))
        .collect();
    services.sort();
    assert!(!services.is_empty(), "a MongoDB instance has a Service");
    services
}

//! Network access over HTTP: the ACL as a set, its validation, and an ACL change's own aspect and
//! operation, with an agent converging a simulated cluster.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use projections::Health;
use serde_json::{Value, json};
use system_tests::{
    TestApi,
    cluster::{agent, simulator},
};
use uuid::Uuid;

const CONVERGE: Duration = Duration::from_secs(30);

fn acl(cidrs: &[&str]) -> Value {
    json!({"entries": cidrs.iter().map(|c| json!({"cidr": c})).collect::<Vec<_>>()})
}

async fn operation_state(api: &TestApi, id: &Value) -> Value {
    let path = format!("/v1/projects/acme/operations/{}", id.as_str().unwrap());
    api.call(Method::GET, &path, None, &[]).await.body["state"].clone()
}

/// The reference design's example: observed ACL 0.0.0.0/0, desired 1.2.3.4/32 → the network aspect is
/// reconciling until the agent observes the new ACL, then healthy. The agent is stopped while the change
/// is made, so the reconciling state is seen for certain, not raced.
#[tokio::test]
async fn an_acl_change_reconciles_the_network_aspect_until_the_agent_observes_it() {
    let api = TestApi::start().await;
    let (sim, address) = simulator(Duration::from_millis(50)).await;
    let first_agent = agent(&api, "eu-1", address).await;
    let body = json!({"name": "db", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1",
        "acl": [{"cidr": "0.0.0.0/0", "description": "everyone"}], "allow_public": true});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}");
    if !api.wait_for_state(id, Health::Healthy, CONVERGE).await {
        let got = api.call(Method::GET, &path, None, &[]).await;
        panic!("never healthy: {:#}", got.body);
    }
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["acl"], json!([{"cidr": "0.0.0.0/0", "description": "everyone"}]));
    assert_eq!(got.body["observed"]["acl"], json!(["0.0.0.0/0"]), "{}", got.body["observed"]);

    first_agent.abort();
    let _ = first_agent.await;
    let changed = api.call(Method::PUT, &format!("{path}/acl"), Some(&acl(&["1.2.3.4/32"])), &[]).await;
    assert_eq!(changed.status, StatusCode::ACCEPTED, "{}", changed.body);
    let got = api.get_after(&path, [&changed]).await;
    assert_eq!(
        got.body["status"]["aspects"],
        json!({"version": "healthy", "resources": "healthy", "configuration": "healthy",
            "network_access": "reconciling", "credentials": "healthy", "restore": "healthy",
            "users": "healthy"}),
        "{}",
        got.body["status"]
    );
    assert_eq!(got.body["observed"]["acl"], json!(["0.0.0.0/0"]), "still the old ACL in the cluster");
    let condition = got.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NetworkAccessApplied")
        .cloned();
    assert_eq!(condition.map(|c| c["status"].clone()), Some(json!("False")), "{}", got.body["status"]);
    assert_eq!(operation_state(&api, &changed.body["id"]).await, "in_progress");

    let _second_agent = agent(&api, "eu-1", address).await;
    assert!(
        api.wait_for_operation(changed.operation_id(), "succeeded", CONVERGE).await,
        "the ACL change never succeeded"
    );
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy again");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["status"]["aspects"]["network_access"], "healthy");
    assert_eq!(got.body["observed"]["acl"], json!(["1.2.3.4/32"]), "{}", got.body["observed"]);
    {
        let mut store = sim.store();
        let policies = store.resource_type("networking.k8s.io", "v1", "networkpolicies").unwrap();
        let policy = store.get(&policies, "cp-acme", "db-access").expect("the NetworkPolicy");
        assert_eq!(
            cluster_agent::render::network::admitted_blocks(&serde_json::to_value(policy).unwrap()),
            ["1.2.3.4/32"]
        );
        let services = store.resource_type("", "v1", "services").unwrap();
        let endpoint =
            serde_json::to_value(store.get(&services, "cp-acme", "db-endpoint").expect("the endpoint"))
                .unwrap();
        assert_eq!(endpoint["spec"]["loadBalancerSourceRanges"], json!(["1.2.3.4/32"]));
        assert_eq!(got.body.get("connection"), None, "no address published yet");

        // The cloud provider's load balancer controller publishes the address (core/v1 LoadBalancerIngress);
        // the agent reports it and the instance shows where to connect.
        let published = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}});
        store.merge_patch(&services, "cp-acme", "db-endpoint", &published, true).expect("publish an address");
    }
    let connected = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| {
            m.instance("acme", id)
                .and_then(|v| v.observed.as_ref()?.network.as_ref()?.endpoint.clone())
                .is_some()
        })
        .await;
    assert!(connected, "the published address never reached the instance");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["connection"], json!({"host": "203.0.113.10", "port": 27017}), "{}", got.body);
}

/// An upgrade whose pods take seconds to become ready is still in progress when an ACL change made after
/// it has already succeeded: each operation completes when its own aspect is applied.
#[tokio::test]
async fn an_acl_change_succeeds_while_a_slow_upgrade_is_still_in_progress() {
    let api = TestApi::start().await;
    let (_sim, address) = simulator(Duration::from_secs(4)).await;
    let _agent = agent(&api, "eu-1", address).await;
    let body =
        json!({"name": "db", "service": "mongodb", "version": "6.0", "plan": "starter", "cluster": "eu-1"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}");
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy");

    let upgrade = api.call(Method::PATCH, &path, Some(&json!({"version": "7.0"})), &[]).await;
    assert_eq!(upgrade.status, StatusCode::ACCEPTED, "{}", upgrade.body);
    let narrowed =
        api.call(Method::POST, &format!("{path}/acl"), Some(&json!({"cidr": "198.51.100.7/32"})), &[]).await;
    assert_eq!(narrowed.status, StatusCode::ACCEPTED, "{}", narrowed.body);
    assert!(
        api.wait_for_operation(narrowed.operation_id(), "succeeded", CONVERGE).await,
        "the ACL change never succeeded"
    );
    assert_eq!(
        operation_state(&api, &upgrade.body["id"]).await,
        "in_progress",
        "the upgrade's pods take 4 s to be ready; it cannot be done yet"
    );
    assert!(
        api.wait_for_operation(upgrade.operation_id(), "succeeded", CONVERGE).await,
        "the upgrade never succeeded"
    );
}

#[tokio::test]
async fn the_same_set_in_another_order_writes_nothing_and_each_bad_entry_is_named() {
    let api = TestApi::start().await;
    let created = api.provision("acme", "db").await;
    let id = created.body["instance_id"].as_str().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}/acl");
    let set =
        api.call(Method::PUT, &path, Some(&acl(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"])), &[]).await;
    assert_eq!(set.status, StatusCode::ACCEPTED, "{}", set.body);
    let messages = api.stream_messages().await;

    let again =
        api.call(Method::PUT, &path, Some(&acl(&["192.0.2.0/24", "2001:db8::/32", "10.0.0.0/8"])), &[]).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(again.version(), set.version(), "the unchanged version");
    assert_eq!(again.body["state"], "succeeded", "nothing to apply: {}", again.body);
    assert_eq!(api.stream_messages().await, messages, "no event for the same set");
    let read = api.call(Method::GET, &path, None, &[]).await;
    let cidrs: Vec<&str> =
        read.body["entries"].as_array().unwrap().iter().map(|e| e["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"], "a set, sorted");
    assert_eq!(read.version(), set.version());

    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("10.1.{i}.0/24")).collect();
    let refs: Vec<&str> = hundred_and_one.iter().map(String::as_str).collect();
    let cases = [
        (acl(&refs), "/entries", "max_items"),
        (acl(&["10.0.0.0/8", "10.0.0.0/8"]), "/entries/1/cidr", "unique_cidr"),
        (acl(&["10.0.0.1/8"]), "/entries/0/cidr", "cidr_host_bits_zero"),
        (acl(&["10.0.0.0/99"]), "/entries/0/cidr", "cidr"),
        (acl(&["0.0.0.0/0"]), "/entries/0/cidr", "public_access_flag"),
    ];
    for (body, field, rule) in cases {
        let refused = api.call(Method::PUT, &path, Some(&body), &[]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{field} {rule}: {}", refused.body);
        assert_eq!(refused.header("content-type"), Some("application/problem+json"));
        let errors = refused.body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{}", refused.body);
        assert_eq!((errors[0]["field"].as_str(), errors[0]["rule"].as_str()), (Some(field), Some(rule)));
    }
    let refused = api.call(Method::POST, &path, Some(&json!({"cidr": "::/0"})), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["errors"][0]["field"], "/cidr");
    assert_eq!(api.stream_messages().await, messages, "no refused change reached the event log");

    let removed = api.call(Method::DELETE, &format!("{path}/10.0.0.0%2F8"), None, &[]).await;
    assert_eq!(removed.status, StatusCode::ACCEPTED, "{}", removed.body);
    let gone = api.call(Method::DELETE, &format!("{path}/10.0.0.0%2F8"), None, &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    let read = api.get_after(&path, [&removed]).await;
    assert_eq!(read.body["entries"].as_array().unwrap().len(), 2);
}

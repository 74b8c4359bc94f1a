//! Time travel over an instance's events: its history in stream order with actors, its state at a moment
//! between two updates, and what changed between two moments.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{SecondsFormat, Utc};
use projections::Health;
use serde_json::json;
use system_tests::TestApi;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn at(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true).replace('+', "%2B")
}

#[tokio::test]
async fn history_as_of_and_diff_show_the_instance_between_its_updates() {
    let api = TestApi::start().await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let before = Utc::now();
    let body = json!({"name": "orders", "service": "mongodb", "version": "6.0", "plan": "starter", "cluster": "eu-1",
                      "description": "first"});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, WAIT).await, "never healthy");
    let path = format!("/v1/projects/acme/instances/{id}");

    // Two updates: an upgrade, then a new description.
    let upgraded = api.call(Method::PATCH, &path, Some(&json!({"version": "7.0"})), &[]).await;
    assert_eq!(upgraded.status, StatusCode::ACCEPTED, "{}", upgraded.body);
    assert!(api.wait_for_operation(upgraded.operation_id(), "succeeded", WAIT).await, "upgrade never done");
    let between = Utc::now();
    let described = api.call(Method::PATCH, &path, Some(&json!({"description": "second"})), &[]).await;
    assert_eq!(described.status, StatusCode::ACCEPTED, "{}", described.body);
    assert!(api.wait_for_operation(described.operation_id(), "succeeded", WAIT).await, "never described");
    let after = Utc::now();

    // As of a moment between the two updates: upgraded, still the first description, and healthy as the
    // cluster reported then.
    let then = api.call(Method::GET, &format!("{path}?as_of={}", at(between)), None, &[]).await;
    assert_eq!(then.status, StatusCode::OK, "{}", then.body);
    assert_eq!(then.body["version"], "7.0", "{}", then.body);
    assert_eq!(then.body["description"], "first", "{}", then.body);
    assert!(then.headers.get("etag").is_none(), "a past state has no ETag to write against");
    let now = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(now.body["description"], "second");
    // Before it existed: not found. A moment to come: as it is now. Not a time: 400.
    let early = api.call(Method::GET, &format!("{path}?as_of={}", at(before)), None, &[]).await;
    assert_eq!(early.status, StatusCode::NOT_FOUND, "{}", early.body);
    let future = api
        .call(
            Method::GET,
            &format!("{path}?as_of={}", at(Utc::now() + chrono::TimeDelta::hours(1))),
            None,
            &[],
        )
        .await;
    assert_eq!(future.status, StatusCode::OK, "{}", future.body);
    assert_eq!(
        (future.body["description"].as_str(), future.body["version"].as_str()),
        (Some("second"), Some("7.0"))
    );
    let garbage = api.call(Method::GET, &format!("{path}?as_of=yesterday"), None, &[]).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.body);

    // What changed from between to after: the description, not the version.
    let diff =
        api.call(Method::GET, &format!("{path}/diff?from={}&to={}", at(between), at(after)), None, &[]).await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.body);
    let changes = diff.body["changes"].as_array().unwrap();
    let change = |p: &str| changes.iter().find(|c| c["path"] == p).cloned();
    assert_eq!(
        change("/description"),
        Some(json!({"path": "/description", "from": "first", "to": "second"}))
    );
    assert_eq!(change("/version"), None, "{}", diff.body);
    let since_start = api
        .call(Method::GET, &format!("{path}/diff?from={}&to={}", at(before), at(between)), None, &[])
        .await;
    assert_eq!(since_start.body["existed_at_from"], false);
    assert_eq!(
        since_start.body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == "/version")
            .map(|c| c["to"].clone()),
        Some(json!("7.0"))
    );

    // The history: desired and observed events in stream order, with actors.
    let history = api.call(Method::GET, &format!("{path}/history?limit=500"), None, &[]).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let items = history.body["items"].as_array().unwrap().clone();
    let sequences: Vec<u64> = items.iter().map(|i| i["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] <= w[1]), "stream order: {sequences:?}");
    let types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    let first = |t: &str| types.iter().position(|x| *x == t).unwrap_or_else(|| panic!("no {t} in {types:?}"));
    assert!(first("InstanceProvisioned") < first("InstanceObserved"), "{types:?}");
    assert!(first("InstanceObserved") < first("VersionUpgraded"), "{types:?}");
    assert!(first("VersionUpgraded") < first("DescriptionChanged"), "{types:?}");
    for item in &items {
        let actor = item["actor"].as_str().unwrap();
        match item["source"].as_str().unwrap() {
            "observed" => assert_eq!(actor, "cluster-agent/eu-1", "{item}"),
            "desired" => {
                assert!(!actor.is_empty() && !actor.starts_with("cluster-agent/"), "{item}");
                assert!(item["operation_id"].is_string(), "{item}");
            }
            other => panic!("source {other}"),
        }
    }
    let provisioned = &items[first("InstanceProvisioned")];
    assert_eq!(provisioned["operation_id"], created.operation_id().to_string());
    assert_eq!(provisioned["operation"], "provision");

    // Pages: the same entries, in the same order, without overlap.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let url = match &token {
            Some(t) => format!("{path}/history?limit=2&page_token={t}"),
            None => format!("{path}/history?limit=2"),
        };
        let page = api.call(Method::GET, &url, None, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        paged.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, items, "paging returns every entry once");
}

#[tokio::test]
async fn an_audit_report_names_each_command_s_actor_and_what_the_cluster_observed_after_it() {
    let api = TestApi::start().await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let body = json!({"name": "orders", "service": "mongodb", "version": "6.0", "plan": "starter", "cluster": "eu-1"});
    let auth = [("authorization", format!("Bearer {}", system_tests::ACME_EDITOR_TOKEN))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &auth).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(created.operation_id(), "succeeded", WAIT).await, "never provisioned");
    let path = format!("/v1/projects/acme/instances/{id}");
    let upgraded = api.call(Method::PATCH, &path, Some(&json!({"version": "7.0"})), &auth).await;
    assert!(api.wait_for_operation(upgraded.operation_id(), "succeeded", WAIT).await, "never upgraded");

    let range = streams::history::HistoryRange { after: 0, until: None, limit: usize::MAX };
    let messages = streams::history::read_project_history(&api.state.events, "acme", range).await.unwrap();
    let (audits, unreadable) = projections::audit::report(&messages, None);
    assert_eq!(unreadable, 0);
    let audit = audits.iter().find(|a| a.instance_id == id).expect("the instance's audit");
    let operations: Vec<(&str, &str)> =
        audit.commands.iter().map(|c| (c.operation.as_str(), c.events[0].as_str())).collect();
    assert_eq!(operations, [("provision", "InstanceProvisioned"), ("update", "VersionUpgraded")]);
    for (command, operation) in audit.commands.iter().zip([created.operation_id(), upgraded.operation_id()]) {
        assert_eq!(command.operation_id, operation);
        assert!(command.actor.contains("acme-editor"), "the token that asked: {}", command.actor);
        // What the cluster did after it: the rollout reported, ending ready at the command's generation.
        let last = command.observed_after.iter().rev().find(|o| o.event_type == "InstanceObserved");
        assert!(last.is_some_and(|o| o.summary.starts_with("ready")), "{:?}", command.observed_after);
    }
    let text = projections::audit::render_text(&audits);
    assert!(text.contains(&format!("update by {}", audit.commands[1].actor)), "{text}");
}

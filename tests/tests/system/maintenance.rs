//! Maintenance windows end to end, on a clock the test controls: a restart-mode configuration change
//! asked outside the instance's window is held (the cluster keeps running the old value) and applied only
//! when the maintenance scheduler is handed a time inside the window; "apply now" applies the next one at
//! once. A bad window is refused field by field and stored nowhere.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Datelike as _, TimeDelta, Utc};
use domain::instance::maintenance::MaintenanceWindow;
use projections::{Health, maintenance_scheduler::Scheduler};
use serde_json::{Value, json};
use system_tests::{
    TestApi,
    cluster::{agent, simulator},
};
use uuid::Uuid;

const CONVERGE: Duration = Duration::from_secs(30);

fn day_name(t: DateTime<Utc>) -> &'static str {
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        [t.weekday().num_days_from_monday() as usize]
}

/// A window of a day that opened an hour ago (UTC): open for the whole of a test.
pub(crate) fn open_now() -> Value {
    let start = Utc::now() - TimeDelta::hours(1);
    json!({"day": day_name(start), "start": start.format("%H:%M").to_string(), "duration_minutes": 1440})
}

/// A one-hour window opening three days from now at noon UTC: closed for the whole of a test.
fn closed_now() -> Value {
    json!({"day": day_name(Utc::now() + TimeDelta::days(3)), "start": "12:00", "duration_minutes": 60})
}

#[tokio::test]
async fn a_restart_change_outside_the_window_waits_for_it_and_apply_now_applies_at_once() {
    let api = TestApi::start().await;
    let (_sim, address) = simulator(Duration::from_millis(50)).await;
    let _agent = agent(&api, "eu-1", address).await;
    let body = json!({"name": "mongo", "service": "mongodb", "version": "7.0", "plan": "starter",
        "cluster": "eu-1", "maintenance_window": closed_now()});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "never healthy");
    let path = format!("/v1/projects/acme/instances/{id}");
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["maintenance_window"]["time_zone"], "UTC", "{}", got.body);
    assert_eq!(got.body.get("pending_maintenance"), None, "nothing held yet");

    // A bad window: every bad field named, nothing stored.
    let before = api.stream_messages().await;
    let bad = json!({"maintenance_window": {"day": "monday", "start": "25:00", "duration_minutes": 10,
        "time_zone": "Mars/Olympus"}});
    let refused = api.call(Method::PATCH, &path, Some(&bad), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    let fields: Vec<&str> =
        refused.body["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(
        fields,
        [
            "/maintenance_window/start",
            "/maintenance_window/duration_minutes",
            "/maintenance_window/time_zone"
        ],
        "{}",
        refused.body
    );
    let unknown_day =
        json!({"maintenance_window": {"day": "someday", "start": "02:00", "duration_minutes": 60}});
    let refused = api.call(Method::PATCH, &path, Some(&unknown_day), &[]).await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    assert!(refused.body.to_string().contains("/maintenance_window/day"), "{}", refused.body);
    assert_eq!(api.stream_messages().await, before, "nothing refused reaches the event log");

    // Outside the window: held. The instance shows what was asked and when it will be applied; the
    // cluster keeps running the old value, and nothing reconciles.
    let held = api
        .call(Method::PATCH, &path, Some(&json!({"config": {"max_incoming_connections": 500}})), &[])
        .await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    assert!(
        api.wait_for_operation(held.operation_id(), "succeeded", CONVERGE).await,
        "the hold never settled"
    );
    let got = api.get_after(&path, [&held]).await;
    assert_eq!(got.body["config"]["max_incoming_connections"], 500, "the configuration as asked");
    assert_eq!(
        got.body["pending_maintenance"]["items"],
        json!([{"kind": "configuration_restart", "parameters": ["max_incoming_connections"],
            "config": {"max_incoming_connections": 500}}]),
        "{}",
        got.body
    );
    let mut window = closed_now();
    window["time_zone"] = "UTC".into();
    let window: MaintenanceWindow = serde_json::from_value(window).unwrap();
    let opening = window.next_opening(Utc::now()).unwrap();
    let scheduled: DateTime<Utc> =
        got.body["pending_maintenance"]["scheduled_for"].as_str().unwrap().parse().unwrap();
    assert_eq!(scheduled, opening, "{}", got.body);
    assert_eq!(got.body["status"]["state"], "healthy", "{}", got.body["status"]);
    assert_eq!(got.body["status"].get("pending_restart"), None);
    assert_eq!(
        got.body["observed"]["config"].get("max_incoming_connections"),
        None,
        "the cluster runs what it ran: {}",
        got.body["observed"]
    );

    // The clock: the scheduler applies nothing before the window, and the held change once it is open.
    let scheduler = Scheduler::new(api.state.read_models.clone(), api.state.commands.clone());
    assert_eq!(scheduler.pass(Utc::now()).await.applied, 0, "the window is closed");
    assert_eq!(scheduler.pass(opening - TimeDelta::seconds(1)).await.applied, 0, "not yet");
    assert_eq!(scheduler.pass(opening + TimeDelta::minutes(60)).await.applied, 0, "closed again");
    assert_eq!(api.state.read_models.read().instance("acme", id).unwrap().version, held.version());
    let pass = scheduler.pass(opening + TimeDelta::minutes(1)).await;
    assert_eq!(pass.applied, 1, "{pass:?}");
    let applied = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| {
            m.instance("acme", id).is_some_and(|v| {
                v.spec().pending_maintenance.is_empty()
                    && v.observed
                        .as_ref()
                        .and_then(|o| o.config.as_ref())
                        .is_some_and(|c| c.get("max_incoming_connections") == Some(&json!(500)))
            })
        })
        .await;
    assert!(applied, "the held change was never applied in the window");
    let history = api.call(Method::GET, &format!("{path}/history"), None, &[]).await;
    let actors = history.body.to_string();
    assert!(actors.contains("maintenance-scheduler") && actors.contains("MaintenanceApplied"), "{actors}");
    assert_eq!(scheduler.pass(opening + TimeDelta::minutes(2)).await.applied, 0, "applied once");

    // Apply now: the next held change is applied at once, outside the window.
    let held = api
        .call(Method::PATCH, &path, Some(&json!({"config": {"max_incoming_connections": 600}})), &[])
        .await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let got = api.get_after(&path, [&held]).await;
    assert_eq!(
        got.body["pending_maintenance"]["items"][0]["parameters"],
        json!(["max_incoming_connections"])
    );
    let now = api.call(Method::POST, &format!("{path}/maintenance/apply"), None, &[]).await;
    assert_eq!(now.status, StatusCode::ACCEPTED, "{}", now.body);
    assert_eq!(now.body["type"], "apply_maintenance", "{}", now.body);
    let got = api.get_after(&path, [&now]).await;
    assert_eq!(got.body.get("pending_maintenance"), None, "{}", got.body);
    assert!(
        api.wait_for_operation(now.operation_id(), "succeeded", CONVERGE).await,
        "apply now never applied"
    );
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["observed"]["config"], json!({"max_incoming_connections": 600}), "{}", got.body);

    // Nothing held: applying is done at once and stores nothing.
    let before = api.stream_messages().await;
    let nothing = api.call(Method::POST, &format!("{path}/maintenance/apply"), None, &[]).await;
    assert_eq!(nothing.status, StatusCode::ACCEPTED, "{}", nothing.body);
    assert_eq!(nothing.body["state"], "succeeded", "{}", nothing.body);
    assert_eq!(api.stream_messages().await, before);
}

#[tokio::test]
async fn the_document_states_the_window_the_api_accepts_and_the_apply_route() {
    let api = TestApi::start().await;
    let document = api.call(Method::GET, "/openapi.json", None, &[]).await.body;
    let window = &document["components"]["schemas"]["MaintenanceWindow"];
    let zones =
        window["properties"]["time_zone"]["enum"].as_array().expect("the time zones the domain takes");
    assert!(zones.contains(&json!("Europe/Berlin")) && !zones.contains(&json!("Mars/Olympus")), "{window}");
    assert_eq!(window["properties"]["duration_minutes"]["minimum"], 30, "{window}");
    assert_eq!(window["properties"]["duration_minutes"]["maximum"], 1440, "{window}");
    for variant in document["components"]["schemas"]["ProvisionRequest"]["oneOf"].as_array().unwrap() {
        assert!(variant["properties"]["maintenance_window"].is_object(), "{}", variant["title"]);
    }
    let apply = &document["paths"]["/v1/projects/{project}/instances/{id}/maintenance/apply"]["post"];
    assert!(apply["responses"]["202"].is_object(), "{apply}");
}

#[tokio::test]
async fn inside_the_window_a_restart_change_is_applied_at_once() {
    let api = TestApi::start().await;
    let (_sim, address) = simulator(Duration::from_millis(50)).await;
    let _agent = agent(&api, "eu-1", address).await;
    let body = json!({"name": "mongo", "service": "mongodb", "version": "7.0", "plan": "starter",
        "cluster": "eu-1", "maintenance_window": open_now()});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/projects/acme/instances/{id}");
    let changed = api
        .call(Method::PATCH, &path, Some(&json!({"config": {"max_incoming_connections": 500}})), &[])
        .await;
    assert_eq!(changed.status, StatusCode::ACCEPTED, "{}", changed.body);
    let got = api.get_after(&path, [&changed]).await;
    assert_eq!(got.body.get("pending_maintenance"), None, "{}", got.body);
    assert!(api.wait_for_operation(changed.operation_id(), "succeeded", CONVERGE).await);
    let got = api.call(Method::GET, &path, None, &[]).await;
    assert_eq!(got.body["observed"]["config"], json!({"max_incoming_connections": 500}), "{}", got.body);
}

//! Version rollouts end to end, on a clock the test controls: a platform admin rolls InfluxDB 2.6 out
//! to 2.7; the roller holds the upgrade for every 2.6 instance (their clusters keep running 2.6, each
//! shows the held upgrade and when it is scheduled); the maintenance scheduler applies it only once an
//! instance's window is open, and the simulated cluster then runs 2.7; a customer's "apply now" applies
//! it at once; the rollout's progress reads right at each step. Refused rollouts are named field by
//! field and stored nowhere.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Datelike as _, TimeDelta, Utc};
use domain::instance::maintenance::MaintenanceWindow;
use projections::{Health, ReadModel, maintenance_scheduler::Scheduler, rollouts::Roller};
use serde_json::{Value, json};
use system_tests::{
    ACME_ADMIN_TOKEN, TestApi,
    cluster::{agent, simulator},
};
use uuid::Uuid;

const CONVERGE: Duration = Duration::from_secs(30);

/// A one-hour window opening `days` from now at noon UTC: closed for the whole of a test.
fn closed_window(days: i64) -> Value {
    let day = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        [(Utc::now() + TimeDelta::days(days)).weekday().num_days_from_monday() as usize];
    json!({"day": day, "start": "12:00", "duration_minutes": 60, "time_zone": "UTC"})
}

fn opening(window: &Value) -> DateTime<Utc> {
    let window: MaintenanceWindow = serde_json::from_value(window.clone()).unwrap();
    window.next_opening(Utc::now()).unwrap()
}

async fn provision(api: &TestApi, name: &str, version: &str, window: &Value) -> Uuid {
    let body = json!({"name": name, "service": "influxdb", "version": version, "plan": "starter",
        "cluster": "eu-1", "maintenance_window": window});
    let created = api.call(Method::POST, "/v1/projects/acme/instances", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    created.body["instance_id"].as_str().unwrap().parse().unwrap()
}

fn running(model: &ReadModel, id: Uuid) -> Option<String> {
    model.instance("acme", id)?.observed.as_ref()?.running_version.clone()
}

async fn progress(api: &TestApi, rollout: &str) -> Value {
    let got = api.call(Method::GET, &format!("/v1/admin/rollouts/{rollout}"), None, &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    got.body
}

#[tokio::test]
async fn a_rollout_is_held_for_each_window_applied_when_it_opens_or_now_and_its_progress_reads_right() {
    let api = TestApi::start().await;
    let (_sim, address) = simulator(Duration::from_millis(50)).await;
    let _agent = agent(&api, "eu-1", address).await;
    let (early, late) = (closed_window(3), closed_window(4));
    let a = provision(&api, "metrics-a", "2.6", &early).await;
    let b = provision(&api, "metrics-b", "2.6", &early).await;
    let c = provision(&api, "metrics-c", "2.6", &late).await;
    let newer = provision(&api, "metrics-new", "2.7", &early).await;
    for id in [a, b, c, newer] {
        assert!(api.wait_for_state(id, Health::Healthy, CONVERGE).await, "{id} never healthy");
    }

    // Refused: a major upgrade, a downgrade, a version not offered; a project admin. Nothing stored.
    for (body, field, rule) in [
        (
            json!({"service": "postgresql", "from_version": "16", "to_version": "17"}),
            "/to_version",
            "same_major",
        ),
        (
            json!({"service": "influxdb", "from_version": "2.7", "to_version": "2.6"}),
            "/to_version",
            "no_downgrade",
        ),
        (
            json!({"service": "influxdb", "from_version": "2.5", "to_version": "2.7"}),
            "/from_version",
            "offered_version",
        ),
    ] {
        let refused = api.call(Method::POST, "/v1/admin/rollouts", Some(&body), &[]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        assert_eq!(refused.body["errors"][0]["field"], field, "{}", refused.body);
        assert_eq!(refused.body["errors"][0]["rule"], rule, "{}", refused.body);
    }
    let body = json!({"service": "influxdb", "from_version": "2.6", "to_version": "2.7"});
    let forbidden = api
        .call(
            Method::POST,
            "/v1/admin/rollouts",
            Some(&body),
            &[("authorization", &format!("Bearer {ACME_ADMIN_TOKEN}"))],
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{}", forbidden.body);
    let listed = api.call(Method::GET, "/v1/admin/rollouts", None, &[]).await;
    assert_eq!(listed.body, json!({"rollouts": []}), "nothing refused is stored");

    // Announced: the three 2.6 instances are targeted, none held yet; the 2.7 one is not concerned.
    let created = api.call(Method::POST, "/v1/admin/rollouts", Some(&body), &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let rollout = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("location"), Some(format!("/v1/admin/rollouts/{rollout}").as_str()));
    assert_eq!(
        created.body["progress"],
        json!({"targeted": 3, "waiting": 3, "held": 0, "upgrading": 0, "applied": 0, "failed": 0})
    );
    let again = api.call(Method::POST, "/v1/admin/rollouts", Some(&body), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "one rollout at a time moves 2.6: {}", again.body);

    // The roller holds the upgrade for each; the clusters keep running 2.6.
    let roller =
        Roller::new(api.state.read_models.clone(), api.state.commands.clone(), api.state.rollouts.clone());
    assert_eq!(roller.pass().await.held, 3);
    let held = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| {
            [a, b, c].iter().all(|id| {
                m.instance("acme", *id).is_some_and(|v| v.spec().pending_maintenance.version.is_some())
            })
        })
        .await;
    assert!(held, "the upgrades were never held");
    assert_eq!(roller.pass().await.held, 0, "held once");
    let shown = progress(&api, &rollout).await;
    assert_eq!(shown["progress"]["held"], 3, "{shown}");
    for target in shown["instances"].as_array().unwrap() {
        let id: Uuid = target["instance_id"].as_str().unwrap().parse().unwrap();
        let window = if id == c { &late } else { &early };
        let scheduled: DateTime<Utc> = target["scheduled_for"].as_str().unwrap().parse().unwrap();
        assert_eq!(scheduled, opening(window), "{target}");
    }
    let got = api.call(Method::GET, &format!("/v1/projects/acme/instances/{a}"), None, &[]).await;
    assert_eq!(
        got.body["pending_maintenance"]["items"],
        json!([{"kind": "version_upgrade", "from": "2.6", "to": "2.7", "rollout": rollout}]),
        "{}",
        got.body
    );
    assert_eq!(got.body["version"], "2.6", "{}", got.body);
    assert_eq!(running(&api.state.read_models.read(), a).as_deref(), Some("2.6"));

    // Outside the windows nothing changes; once the early window opens, a and b are upgraded and their
    // cluster runs 2.7, c still holds it.
    let scheduler = Scheduler::new(api.state.read_models.clone(), api.state.commands.clone());
    let early_opens = opening(&early);
    assert_eq!(scheduler.pass(Utc::now()).await.applied, 0, "every window is closed");
    assert_eq!(scheduler.pass(early_opens - TimeDelta::seconds(1)).await.applied, 0, "not yet");
    assert_eq!(progress(&api, &rollout).await["progress"]["held"], 3);
    assert_eq!(scheduler.pass(early_opens + TimeDelta::minutes(1)).await.applied, 2);
    let upgraded = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| {
            [a, b].iter().all(|id| {
                running(m, *id).as_deref() == Some("2.7")
                    && m.instance("acme", *id).is_some_and(|v| v.status.state == Health::Healthy)
            })
        })
        .await;
    assert!(upgraded, "the cluster never ran 2.7 after the window opened");
    assert_eq!(running(&api.state.read_models.read(), c).as_deref(), Some("2.6"), "c's window is later");
    let shown = progress(&api, &rollout).await;
    assert_eq!(
        shown["progress"],
        json!({"targeted": 3, "waiting": 0, "held": 1, "upgrading": 0, "applied": 2, "failed": 0}),
        "{shown}"
    );

    // Apply now: c's owner does not wait for its window.
    let now = api
        .call(Method::POST, &format!("/v1/projects/acme/instances/{c}/maintenance/apply"), None, &[])
        .await;
    assert_eq!(now.status, StatusCode::ACCEPTED, "{}", now.body);
    assert!(
        api.wait_for_operation(now.operation_id(), "succeeded", CONVERGE).await,
        "apply now never applied"
    );
    let done = api
        .state
        .read_models
        .wait_until(CONVERGE, |m| {
            running(m, c).as_deref() == Some("2.7")
                && m.instance("acme", c).is_some_and(|v| v.status.state == Health::Healthy)
        })
        .await;
    assert!(done, "apply now never ran 2.7");
    let shown = progress(&api, &rollout).await;
    assert_eq!(
        shown["progress"],
        json!({"targeted": 3, "waiting": 0, "held": 0, "upgrading": 0, "applied": 3, "failed": 0}),
        "{shown}"
    );
    let history = api.call(Method::GET, &format!("/v1/projects/acme/instances/{a}/history"), None, &[]).await;
    let history = history.body.to_string();
    assert!(
        history.contains(&format!("rollout:{rollout}")) && history.contains("VersionUpgraded"),
        "{history}"
    );
    let listed = api.call(Method::GET, "/v1/admin/rollouts", None, &[]).await;
    assert_eq!(listed.body["rollouts"][0]["id"], rollout.as_str(), "{}", listed.body);
}

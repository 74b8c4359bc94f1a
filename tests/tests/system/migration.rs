//! Moving instances between clusters (issue 30): a drain of eu-1 moves twenty instances of all four
//! services to eu-2, each from its own fresh, verified backup, keeping its id and name, its history
//! showing the move, and eu-1 left holding none of their objects; a cordoned cluster takes no new
//! instance; a move whose backup fails leaves the instance serving where it was.

use std::{collections::BTreeSet, time::Duration};

use axum::http::{Method, StatusCode};
use projections::Health;
use serde_json::{Value, json};
use system_tests::{ADMIN_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
/// The whole drain: twenty backups, verifications, restores and removals on two simulated clusters.
const DRAIN_WAIT: Duration = Duration::from_secs(240);

async fn admin(api: &TestApi, method: Method, path: &str, body: Option<&Value>) -> system_tests::Reply {
    api.call(method, path, body, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))]).await
}

/// A MongoDB instance `name` on eu-1, once it serves.
async fn serving_on_eu1(api: &TestApi, name: &str) -> Uuid {
    let body =
        json!({"name": name, "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = admin(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_state(id, Health::Healthy, WAIT).await, "{name} never healthy");
    id
}

/// A change of the instance's description: what a customer asks while the instance moves, or after.
async fn describe(api: &TestApi, id: Uuid) -> system_tests::Reply {
    let path = format!("/v1/projects/acme/instances/{id}");
    admin(api, Method::PATCH, &path, Some(&json!({"description": "x"}))).await
}

/// Every entry of the instance's history (one page holds the few a test makes).
async fn history(api: &TestApi, id: Uuid) -> Vec<Value> {
    let path = format!("/v1/projects/acme/instances/{id}/history?limit=200");
    let page = admin(api, Method::GET, &path, None).await;
    page.body["items"].as_array().unwrap_or_else(|| panic!("a history page: {}", page.body)).clone()
}

/// The first entry of `event_type` in the instance's history.
async fn first_of(api: &TestApi, id: Uuid, event_type: &str) -> Value {
    let items = history(api, id).await;
    let types: Vec<&str> = items.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect();
    let found = items.iter().find(|e| e["type"] == event_type).cloned();
    found.unwrap_or_else(|| panic!("no {event_type} in the history of {id}: {types:?}"))
}

/// The control plane's migrator, as the leading projector runs it, passing often; stopped on drop.
fn migrator(api: &TestApi) -> tokio_util::task::AbortOnDropHandle<()> {
    let migrator = projections::migrations::Migrator::new(
        api.state.read_models.clone(),
        api.state.clusters.clone(),
        api.state.commands.clone(),
        api.state.backups.clone(),
    );
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(migrator.run(Duration::from_millis(100))))
}

/// Every object in the simulated cluster labelled with one of `ids`, as `Kind/name`.
fn objects_of(sim: &k8s_sim::Simulator, ids: &BTreeSet<String>) -> Vec<String> {
    let store = sim.store();
    let label = cluster_agent::render::INSTANCE_LABEL;
    let mut found = Vec::new();
    for ty in store.types().to_vec() {
        for object in store.list(&ty, None, None) {
            let id = object["metadata"]["labels"][label].as_str().unwrap_or_default();
            let spec_id = object["spec"]["instanceId"].as_str().unwrap_or_default();
            if ids.contains(id) || ids.contains(spec_id) {
                found.push(format!(
                    "{}/{}",
                    object["kind"].as_str().unwrap_or("?"),
                    object["metadata"]["name"]
                ));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_drain_moves_twenty_instances_of_four_services_with_their_own_backups_ids_and_names() {
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let (api, s3) = (&stack.api, &stack.s3);
    let (target_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _target_agent =
        system_tests::cluster::agent_with_backups(api, "eu-2", address, Some(s3.target())).await;
    let _migrator = migrator(api);

    let services = [("postgresql", "16"), ("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6")];
    let mut instances = Vec::new();
    for i in 0..20 {
        let (service, version) = services[i % 4];
        let name = format!("{service}-{i}");
        let body = json!({"name": name, "service": service, "version": version, "plan": "starter", "cluster": "eu-1"});
        let created = admin(api, Method::POST, "/v1/projects/acme/instances", Some(&body)).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
        let id: Uuid = created.body["instance_id"].as_str().unwrap().parse().unwrap();
        instances.push((id, name));
    }
    for (id, name) in &instances {
        assert!(api.wait_for_state(*id, Health::Healthy, WAIT).await, "{name} never healthy on eu-1");
    }
    let ids: BTreeSet<String> = instances.iter().map(|(id, _)| id.to_string()).collect();
    assert!(!objects_of(&stack.sim, &ids).is_empty(), "eu-1 holds the instances' objects");

    let drained =
        admin(api, Method::POST, "/v1/admin/clusters/eu-1/drain", Some(&json!({"parallel": 4}))).await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.body);
    assert_eq!(
        (drained.body["cordoned"].as_bool(), drained.body["draining"].as_u64()),
        (Some(true), Some(4))
    );
    // Cordoned: a new instance naming it is refused, one placed by region goes elsewhere.
    let named =
        json!({"name": "late", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let refused = admin(api, Method::POST, "/v1/projects/acme/instances", Some(&named)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["rule"], "cluster_not_cordoned", "{}", refused.body);
    let placed = json!({"name": "late", "service": "mongodb", "version": "7.0", "plan": "starter", "region": "eu-central"});
    let late = admin(api, Method::POST, "/v1/projects/acme/instances", Some(&placed)).await;
    assert_eq!(late.status, StatusCode::ACCEPTED, "{}", late.body);
    let late_id: Uuid = late.body["instance_id"].as_str().unwrap().parse().unwrap();
    let shown = api.get_after(&format!("/v1/projects/acme/instances/{late_id}"), [&late]).await;
    assert_eq!(shown.body["cluster"], "eu-2", "placement skips the cordoned cluster: {}", shown.body);

    // Every instance ends on eu-2, healthy, with no move in progress, and eu-1's copy reported gone.
    let moved = api
        .state
        .read_models
        .wait_until(DRAIN_WAIT, |m| {
            instances.iter().all(|(id, _)| {
                m.instance("acme", *id).is_some_and(|v| {
                    v.spec().cluster == "eu-2"
                        && v.instance.migration().is_none()
                        && v.status.state == Health::Healthy
                        && v.left.as_ref().is_some_and(|l| l.cluster == "eu-1" && l.removed)
                })
            })
        })
        .await;
    if !moved {
        let model = api.state.read_models.read();
        let states: Vec<String> = instances
            .iter()
            .map(|(id, name)| {
                let v = model.instance("acme", *id).unwrap();
                format!(
                    "{name}: on {} {:?} moving {:?} left {:?}",
                    v.spec().cluster,
                    v.status.state,
                    v.instance.migration(),
                    v.left
                )
            })
            .collect();
        panic!("the drain did not move every instance within {DRAIN_WAIT:?}:\n{}", states.join("\n"));
    }

    for (id, name) in &instances {
        let shown = admin(api, Method::GET, &format!("/v1/projects/acme/instances/{id}"), None).await;
        assert_eq!(
            (shown.body["name"].as_str(), shown.body["cluster"].as_str()),
            (Some(name.as_str()), Some("eu-2"))
        );
        // Restored from its own backup, taken for the move and verified against the store.
        let backup: Uuid = shown.body["restored_from"]["backup_id"]
            .as_str()
            .expect("restored from a backup")
            .parse()
            .unwrap();
        assert_eq!(
            shown.body["restored_from"]["source_instance_id"],
            id.to_string(),
            "{name}: {}",
            shown.body
        );
        {
            let model = api.state.read_models.read();
            let view = model.backups().get("acme", backup).expect("the move's backup");
            assert_eq!(view.verified, Some(true), "{name}: the move's backup was not verified");
            assert!(
                matches!(view.trigger, domain::BackupTrigger::Migration { .. }),
                "{name}: restored from {:?}, not the move's backup",
                view.trigger
            );
            assert_eq!(view.source.cluster, "eu-1", "{name}: the backup was taken where it served");
        }
        // Its history shows the move with who asked and both clusters.
        let started = first_of(api, *id, "MigrationStarted").await;
        assert_eq!(started["actor"], "admin@tests (token admin)", "{started}");
        assert_eq!(
            (started["data"]["from"].as_str(), started["data"]["to"].as_str()),
            (Some("eu-1"), Some("eu-2"))
        );
        for step in ["MigrationTargetPlaced", "MigrationCompleted"] {
            first_of(api, *id, step).await;
        }
    }
    assert_eq!(
        objects_of(&stack.sim, &ids),
        Vec::<String>::new(),
        "eu-1 still holds objects of moved instances"
    );
    let on_target = objects_of(&target_sim, &ids);
    assert!(on_target.len() >= 20, "eu-2 holds the moved instances: {on_target:?}");
    let clusters = admin(api, Method::GET, "/v1/admin/clusters", None).await;
    let eu1 = clusters.body.as_array().unwrap().iter().find(|c| c["name"] == "eu-1").unwrap().clone();
    assert_eq!((eu1["instances"].as_u64(), eu1["migrating"].as_u64()), (Some(0), Some(0)), "{eu1}");
}

#[tokio::test]
async fn a_move_whose_backup_fails_leaves_the_instance_serving_where_it_was() {
    // eu-2 has an agent, eu-1's has no backup store: the move's backup fails on eu-1.
    let api = TestApi::start().await;
    let (source_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _source = system_tests::cluster::agent(&api, "eu-1", address).await;
    let (_target_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _target = system_tests::cluster::agent(&api, "eu-2", address).await;
    let _migrator = migrator(&api);
    let id = serving_on_eu1(&api, "orders").await;

    // Refused: another region's cluster, the cluster it is on, an unknown one.
    for (cluster, rule) in [("eu-1", "other_cluster"), ("mars-1", "registered_cluster")] {
        let path = format!("/v1/projects/acme/instances/{id}/migrate");
        let refused = admin(&api, Method::POST, &path, Some(&json!({"cluster": cluster}))).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        assert_eq!(refused.body["errors"][0]["rule"], rule, "{}", refused.body);
    }
    let path = format!("/v1/projects/acme/instances/{id}/migrate");
    let asked = admin(&api, Method::POST, &path, Some(&json!({"cluster": "eu-2"}))).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    // While it moves, other changes wait.
    let patch = describe(&api, id).await;
    assert_eq!(patch.status, StatusCode::CONFLICT, "{}", patch.body);
    assert_eq!(patch.body["code"], "instance_migrating", "{}", patch.body);

    let given_up = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", id).is_some_and(|v| v.instance.migration().is_none() && v.version > 2)
        })
        .await;
    assert!(given_up, "the move was never given up");
    let shown = admin(&api, Method::GET, &format!("/v1/projects/acme/instances/{id}"), None).await;
    assert_eq!(shown.body["cluster"], "eu-1", "{}", shown.body);
    assert_eq!(shown.body["status"]["state"], "healthy", "{}", shown.body);
    let failed = first_of(&api, id, "MigrationFailed").await;
    assert!(failed["data"]["reason"].as_str().unwrap().contains("backup"), "{failed}");
    assert_eq!(failed["data"]["target_placed"], false);
    let ids = BTreeSet::from([id.to_string()]);
    assert!(!objects_of(&source_sim, &ids).is_empty(), "the source still serves it");
    // And it takes changes again.
    let patch = describe(&api, id).await;
    assert_eq!(patch.status, StatusCode::ACCEPTED, "{}", patch.body);
}

#[tokio::test]
async fn a_move_whose_copy_fails_removes_the_copy_and_leaves_the_instance_serving_where_it_was() {
    // eu-1 backs up into the store; eu-2's agent has no store, so its copy cannot load the backup.
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let api = &stack.api;
    let (target_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _target = system_tests::cluster::agent(api, "eu-2", address).await;
    let _migrator = migrator(api);
    let id = serving_on_eu1(api, "orders").await;

    let path = format!("/v1/projects/acme/instances/{id}/migrate");
    let asked = admin(api, Method::POST, &path, Some(&json!({"cluster": "eu-2"}))).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let ids = BTreeSet::from([id.to_string()]);
    let given_up = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.instance("acme", id).is_some_and(|v| {
                v.instance.migration().is_none()
                    && v.left.as_ref().is_some_and(|l| l.cluster == "eu-2" && l.removed)
            })
        })
        .await;
    assert!(given_up, "the copy's failure never ended the move with the copy removed");
    assert_eq!(objects_of(&target_sim, &ids), Vec::<String>::new(), "eu-2 still holds the failed copy");
    assert!(!objects_of(&stack.sim, &ids).is_empty(), "the source still serves it");
    let shown = admin(api, Method::GET, &format!("/v1/projects/acme/instances/{id}"), None).await;
    assert_eq!(
        (shown.body["cluster"].as_str(), shown.body["status"]["state"].as_str()),
        (Some("eu-1"), Some("healthy"))
    );
    let items = history(api, id).await;
    let failed = first_of(api, id, "MigrationFailed").await;
    assert_eq!(failed["data"]["target_placed"], true, "{failed}");
    assert!(failed["data"]["reason"].as_str().unwrap().contains("no backup store"), "{failed}");
    // What eu-2 reported of the copy is in the history, beside the source's reports.
    assert!(
        items.iter().any(|e| e["actor"] == "cluster-agent/eu-2"),
        "the copy's reports are not in the history"
    );
}

#[tokio::test]
async fn a_move_that_never_completes_is_given_up_at_its_time_limit_and_one_can_be_cancelled() {
    // eu-2 has no agent: its copy never reports.
    let stack = system_tests::backups::BackupStack::start(Duration::from_millis(50)).await;
    let api = &stack.api;
    let migrator = projections::migrations::Migrator::new(
        api.state.read_models.clone(),
        api.state.clusters.clone(),
        api.state.commands.clone(),
        api.state.backups.clone(),
    )
    .timeout(Duration::from_secs(4));
    let _migrator =
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(migrator.run(Duration::from_millis(100))));
    let mut ids = Vec::new();
    for name in ["orders", "ledger"] {
        let id = serving_on_eu1(api, name).await;
        let asked = admin(
            api,
            Method::POST,
            &format!("/v1/projects/acme/instances/{id}/migrate"),
            Some(&json!({"cluster": "eu-2"})),
        )
        .await;
        assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
        ids.push(id);
    }
    // One is cancelled by the admin at once.
    let cancelled =
        admin(api, Method::DELETE, &format!("/v1/projects/acme/instances/{}/migration", ids[1]), None).await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.body);
    let again =
        admin(api, Method::DELETE, &format!("/v1/projects/acme/instances/{}/migration", ids[1]), None).await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_migration")),
        "{}",
        again.body
    );
    // The other is given up at its time limit, its copy placed on the silent cluster and never ready.
    for (id, why) in
        [(ids[0], "did not complete within its time limit"), (ids[1], "cancelled by admin@tests")]
    {
        let ended = api
            .state
            .read_models
            .wait_until(WAIT, |m| {
                m.instance("acme", id).is_some_and(|v| v.instance.migration().is_none() && v.version > 2)
            })
            .await;
        assert!(ended, "the move of {id} never ended");
        let failed = first_of(api, id, "MigrationFailed").await;
        assert!(failed["data"]["reason"].as_str().unwrap().contains(why), "{failed}");
        let shown = admin(api, Method::GET, &format!("/v1/projects/acme/instances/{id}"), None).await;
        assert_eq!(
            (shown.body["cluster"].as_str(), shown.body["status"]["state"].as_str()),
            (Some("eu-1"), Some("healthy"))
        );
    }
    // The timed-out move had placed its copy: it waited for the copy, not for its backup.
    first_of(api, ids[0], "MigrationTargetPlaced").await;
}

#[tokio::test]
async fn a_drain_does_not_start_a_failed_move_again_before_its_retry_time() {
    // eu-1's agent has no backup store: every move off it fails at its backup.
    let api = TestApi::start().await;
    let (_source_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let _source = system_tests::cluster::agent(&api, "eu-1", address).await;
    let migrator = projections::migrations::Migrator::new(
        api.state.read_models.clone(),
        api.state.clusters.clone(),
        api.state.commands.clone(),
        api.state.backups.clone(),
    );
    let id = serving_on_eu1(&api, "orders").await;
    let drained = admin(&api, Method::POST, "/v1/admin/clusters/eu-1/drain", Some(&json!({}))).await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.body);

    // Passes at the present until the first move failed.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut started = 0;
    loop {
        let pass = migrator.pass(chrono::Utc::now()).await;
        started += pass.started;
        let failed = api
            .state
            .read_models
            .read()
            .instance("acme", id)
            .is_some_and(|v| v.migration_failed_at.is_some());
        if failed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the move off eu-1 never failed");
        let version = api.state.read_models.read().instance("acme", id).map_or(0, |v| v.sequence);
        api.state
            .read_models
            .wait_until(Duration::from_secs(1), |m| {
                m.instance("acme", id).is_some_and(|v| v.sequence > version)
            })
            .await;
    }
    assert_eq!(started, 1, "one move started");
    // At once, and just before the retry time: nothing is started again.
    let failed_at =
        api.state.read_models.read().instance("acme", id).and_then(|v| v.migration_failed_at).unwrap();
    let retry = chrono::TimeDelta::from_std(projections::migrations::DRAIN_RETRY_AFTER).unwrap();
    for now in [chrono::Utc::now(), failed_at + retry - chrono::TimeDelta::seconds(1)] {
        let pass = migrator.pass(now).await;
        assert_eq!((pass.started, pass.backing_off), (0, 1), "at {now}: {pass:?}");
    }
    let starts = history(&api, id).await.iter().filter(|e| e["type"] == "MigrationStarted").count();
    assert_eq!(starts, 1, "the failed move was started again before its retry time");
    // Once the retry time passed, the drain tries again.
    let pass = migrator.pass(failed_at + retry).await;
    assert_eq!(pass.started, 1, "{pass:?}");
}

//! Backups end to end: asked for through the API, made by the cluster's agent (a Job, which the simulator
//! runs by writing a real object into a real S3 server), reported back, listed, and verified in the store.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use backup_store::Verification;
use k8s_sim::server::Faults;
use projections::Health;
use serde_json::{Value, json};
use system_tests::{ACME_ADMIN_TOKEN, ACME_EDITOR_TOKEN, ACME_VIEWER_TOKEN, OTHER_EDITOR_TOKEN, TestApi};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn call(api: &TestApi, method: Method, path: &str, token: &str) -> system_tests::Reply {
    api.call(method, path, None, &[("authorization", &bearer(token))]).await
}

async fn provision(api: &TestApi, name: &str) -> Uuid {
    let body =
        json!({"name": name, "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let created = api
        .call(
            Method::POST,
            "/v1/projects/acme/instances",
            Some(&body),
            &[("authorization", &bearer(ACME_EDITOR_TOKEN))],
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    created.body["instance_id"].as_str().unwrap().parse().unwrap()
}

async fn backup_of(api: &TestApi, instance: Uuid) -> (Uuid, Value) {
    let path = format!("/v1/projects/acme/instances/{instance}/backups");
    let asked = call(api, Method::POST, &path, ACME_EDITOR_TOKEN).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    assert_eq!(asked.body["type"], "backup");
    let id: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(asked.body["id"], id.to_string(), "the operation is the backup");
    (id, asked.body)
}

#[tokio::test]
async fn a_backup_lands_in_the_store_as_reported_and_a_failed_one_says_why() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let target = s3.target();
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target)).await;
    let instance = provision(&api, "orders").await;
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");

    // On demand: done, in the store with the reported size and checksum, listed with its times.
    let list_path = format!("/v1/projects/acme/instances/{instance}/backups");
    let keyed = [("authorization", bearer(ACME_EDITOR_TOKEN)), ("idempotency-key", "nightly-1".to_owned())];
    let keyed: Vec<(&str, &str)> = keyed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let asked = api.call(Method::POST, &list_path, None, &keyed).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let id: Uuid = asked.body["backup_id"].as_str().unwrap().parse().unwrap();
    assert!(api.wait_for_operation(id, "succeeded", WAIT).await, "the backup never completed");
    // A retry with the same Idempotency-Key answers with the same backup and makes no second one; the key
    // on another request is refused.
    let retried = api.call(Method::POST, &list_path, None, &keyed).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    assert_eq!(retried.body["backup_id"], id.to_string(), "the retry names the first backup");
    let other = json!({"name": "other", "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": "eu-1"});
    let reused = api.call(Method::POST, "/v1/projects/acme/instances", Some(&other), &keyed).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.body);
    assert_eq!(reused.body["code"], "idempotency_key_reused");
    let path = format!("/v1/projects/acme/instances/{instance}/backups/{id}");
    let backup = call(&api, Method::GET, &path, ACME_VIEWER_TOKEN).await;
    assert_eq!(backup.status, StatusCode::OK, "{}", backup.body);
    let body = &backup.body;
    assert_eq!(body["state"], "completed", "{body}");
    assert_eq!(body["trigger"], "manual");
    for time in ["requested_at", "started_at", "completed_at"] {
        assert!(body[time].is_string(), "{time} is shown: {body}");
    }
    let location = body["location"].as_str().expect("where it is");
    assert_eq!(location, format!("acme/{instance}/{id}"));
    let store = s3.store();
    let size = body["size_bytes"].as_u64().expect("its size");
    assert!(size > 0);
    let sha256 = body["sha256"].as_str().expect("its checksum");
    assert_eq!(
        store.verify(location, size, sha256).await.unwrap(),
        Verification::Matches,
        "the object is as reported"
    );

    // A failed one is listed with its reason.
    sim.set_faults(Faults { failing_jobs: vec!["*".into()], ..Faults::default() });
    let (failed, _) = backup_of(&api, instance).await;
    assert!(api.wait_for_operation(failed, "failed", WAIT).await, "the failing backup never failed");
    sim.set_faults(Faults::default());
    let listed = call(&api, Method::GET, &list_path, ACME_VIEWER_TOKEN).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", listed.body);
    assert_eq!(items[0]["id"], failed.to_string(), "newest first");
    assert_eq!(items[0]["state"], "failed");
    assert!(
        items[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("BackoffLimitExceeded") || e.contains("backoff")),
        "{}",
        items[0]
    );
    let only_failed = call(&api, Method::GET, &format!("{list_path}?state=failed"), ACME_VIEWER_TOKEN).await;
    assert_eq!(only_failed.body["items"].as_array().unwrap().len(), 1);

    // Who may: a viewer reads but may not back up; another project finds nothing.
    assert_eq!(call(&api, Method::POST, &list_path, ACME_VIEWER_TOKEN).await.status, StatusCode::FORBIDDEN);
    assert_eq!(call(&api, Method::GET, &list_path, OTHER_EDITOR_TOKEN).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&api, Method::GET, &path, OTHER_EDITOR_TOKEN).await.status, StatusCode::NOT_FOUND);

    // No backup of a deprovisioning instance; its backups stay listed.
    let gone =
        call(&api, Method::DELETE, &format!("/v1/projects/acme/instances/{instance}"), ACME_EDITOR_TOKEN)
            .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{}", gone.body);
    let refused = call(&api, Method::POST, &list_path, ACME_EDITOR_TOKEN).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["code"], "instance_deprovisioning");
    assert!(api.wait_for_operation(gone.operation_id(), "succeeded", WAIT).await, "never deprovisioned");
    let after = call(&api, Method::GET, &list_path, ACME_VIEWER_TOKEN).await;
    assert_eq!(
        after.body["items"].as_array().map(Vec::len),
        Some(2),
        "backups outlive their instance: {}",
        after.body
    );
}

#[tokio::test]
async fn no_backup_of_an_instance_that_was_never_ready() {
    let api = TestApi::start().await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    sim.set_faults(Faults { crash_loop: vec!["broken".into()], ..Faults::default() });
    let _agent = system_tests::cluster::agent(&api, "eu-1", address).await;
    let instance = provision(&api, "broken").await;
    assert!(api.wait_for_state(instance, Health::Error, WAIT).await, "the crash loop never showed");
    let refused = call(
        &api,
        Method::POST,
        &format!("/v1/projects/acme/instances/{instance}/backups"),
        ACME_EDITOR_TOKEN,
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["code"], "instance_not_ready");
    let listed = call(
        &api,
        Method::GET,
        &format!("/v1/projects/acme/instances/{instance}/backups"),
        ACME_VIEWER_TOKEN,
    )
    .await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0), "nothing reached the event log");
}

/// The backup facts about `instance` in the event stream, by type, in order.
async fn backup_facts(api: &TestApi, instance: Uuid) -> Vec<String> {
    use futures::StreamExt as _;
    // What the agent had acknowledged is in its cluster's intake or already in the event stream.
    assert!(api.intakes_moved(std::time::Duration::from_secs(30)).await, "facts stayed in the intakes");
    let mut stream = api.state.events.clone();
    let last = stream.info().await.expect("its info").state.last_sequence;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: streams::instances::observed_subject("eu-1", "acme", instance),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("its messages");
    let mut facts = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
        let kind = message
            .headers
            .as_ref()
            .and_then(|h| h.get(streams::headers::EVENT_TYPE))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        if kind.starts_with("Backup") {
            facts.push(kind);
        }
        if message.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX) >= last {
            break;
        }
    }
    facts
}

#[tokio::test]
async fn a_backup_asked_for_while_the_agent_was_down_runs_when_it_is_back_and_a_killed_agent_reports_once() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    // Jobs take a while, so the agent can be killed while one runs.
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(1500)).await;
    let target = s3.target();
    // Every fact the agent publishes, counted before JetStream's duplicate window could drop a repeat:
    // "once" is the agent's own doing (its Job annotation, its in-process guards), not the stream's.
    let mut published = system_tests::backups::AgentPublishes::subscribe(&api, "eu-1").await;
    let agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target.clone())).await;
    let instance = provision(&api, "orders").await;
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");

    // Asked for while the agent is down: accepted, and made once the agent is back.
    agent.abort();
    let _ = agent.await;
    let (while_down, _) = backup_of(&api, instance).await;
    let agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target.clone())).await;
    assert!(
        api.wait_for_operation(while_down, "succeeded", WAIT).await,
        "the backup asked for while the agent was down never ran"
    );

    // Killed while a backup's Job runs (after it reported the start): the restarted agent reports its
    // completion, once.
    let (killed_during, _) = backup_of(&api, instance).await;
    let started = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.backups().get("acme", killed_during).is_some_and(|b| b.started_at.is_some()))
        .await;
    assert!(started, "the backup never started");
    agent.abort();
    let _ = agent.await;
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target)).await;
    assert!(
        api.wait_for_operation(killed_during, "succeeded", WAIT).await,
        "never reported after the restart"
    );
    let facts = backup_facts(&api, instance).await;
    assert_eq!(
        facts,
        ["BackupStarted", "BackupCompleted", "BackupStarted", "BackupCompleted"],
        "each backup started and completed exactly once"
    );
    // And the agents published each fact once: a restarted agent that reported a completed backup again
    // (say, without reading its Job's `reported` annotation) would be hidden above by the `Nats-Msg-Id`.
    let both = [while_down, killed_during];
    let reported = published
        .wait_until(WAIT, |seen| {
            both.iter().all(|b| seen.iter().any(|(t, id)| t == "BackupCompleted" && id == b))
        })
        .await;
    assert!(
        reported,
        "the agents' publishes of the outcomes never arrived: {:?}",
        published.settled(Duration::ZERO).await
    );
    let seen = published.settled(Duration::from_secs(2)).await.to_vec();
    for backup in both {
        for fact in ["BackupStarted", "BackupCompleted"] {
            assert_eq!(
                published.count(fact, backup),
                1,
                "{fact} of {backup} published once by the agents: {seen:?}"
            );
        }
    }
}

/// With the cluster's watches lagging behind the agent's own writes (as a busy API server's do), the agent
/// must not trust its watch cache alone: a backup asked for while the previous one's Job is made but not
/// yet seen, or reported but its annotation not yet seen, wakes it in that gap. Each backup is still made,
/// started and reported once; counted on the agent's own publishes, since JetStream's duplicate window
/// would hide a repeat. Fails with the agent's record of Jobs it made but has not seen (`started`) removed.
#[tokio::test]
async fn with_a_lagging_watch_each_backup_is_started_and_reported_once_by_the_agent() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(300)).await;
    let mut published = system_tests::backups::AgentPublishes::subscribe(&api, "eu-1").await;
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(s3.target())).await;
    let instance = provision(&api, "orders").await;
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    sim.set_faults(Faults { watch_delay_ms: 500, ..Faults::default() });
    let mut asked = Vec::new();
    for _ in 0..3 {
        let (backup, _) = backup_of(&api, instance).await;
        // The next is asked for as soon as this one started: its Job is then made, and not yet seen.
        let started = api
            .state
            .read_models
            .wait_until(WAIT, |m| m.backups().get("acme", backup).is_some_and(|b| b.started_at.is_some()))
            .await;
        assert!(started, "backup {backup} never started");
        asked.push(backup);
    }
    for backup in &asked {
        assert!(api.wait_for_operation(*backup, "succeeded", WAIT).await, "backup {backup} never completed");
    }
    let reported = published
        .wait_until(WAIT, |seen| {
            asked.iter().all(|b| seen.iter().any(|(t, id)| t == "BackupCompleted" && id == b))
        })
        .await;
    assert!(reported, "the outcomes' publishes never arrived");
    let seen = published.settled(Duration::from_secs(3)).await.to_vec();
    for backup in &asked {
        for fact in ["BackupStarted", "BackupCompleted"] {
            assert_eq!(published.count(fact, *backup), 1, "{fact} of {backup} published once: {seen:?}");
        }
    }
}

#[tokio::test]
async fn the_control_plane_verifies_each_reported_object_and_deletes_a_deleted_backup_s_object() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let (_sim, address) = system_tests::cluster::simulator(Duration::from_millis(50)).await;
    let target = s3.target();
    let _agent = system_tests::cluster::agent_with_backups(&api, "eu-1", address, Some(target)).await;
    let store = s3.store();
    let jetstream = async_nats::jetstream::new(api.nats_server.connect().await);
    let _worker = tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        store.clone(),
        jetstream,
    ));
    let instance = provision(&api, "orders").await;
    assert!(api.wait_for_state(instance, Health::Healthy, WAIT).await, "never healthy");
    let (id, _) = backup_of(&api, instance).await;
    let path = format!("/v1/projects/acme/instances/{instance}/backups/{id}");
    let verified = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.backups().get("acme", id).is_some_and(|b| b.verified.is_some()))
        .await;
    assert!(verified, "the control plane never checked the object");
    let backup = call(&api, Method::GET, &path, ACME_VIEWER_TOKEN).await;
    assert_eq!(backup.body["verified"], true, "{}", backup.body);
    let location = backup.body["location"].as_str().unwrap().to_owned();
    let (size, sha256) =
        (backup.body["size_bytes"].as_u64().unwrap(), backup.body["sha256"].as_str().unwrap().to_owned());

    // Deleting destroys data: an editor may not, an admin of the project may.
    let refused = call(&api, Method::DELETE, &path, ACME_EDITOR_TOKEN).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let deleted = call(&api, Method::DELETE, &path, ACME_ADMIN_TOKEN).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert_eq!(deleted.body["type"], "delete_backup");
    assert!(
        api.wait_for_operation(deleted.operation_id(), "succeeded", WAIT).await,
        "the object was never deleted"
    );
    assert_eq!(
        store.verify(&location, size, &sha256).await.unwrap(),
        Verification::Missing,
        "gone from the store"
    );
    let after = call(&api, Method::GET, &path, ACME_VIEWER_TOKEN).await;
    assert_eq!(after.body["state"], "deleted", "the record stays, marked deleted: {}", after.body);
    let again = call(&api, Method::DELETE, &path, ACME_ADMIN_TOKEN).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], deleted.body["id"], "a repeated deletion answers the first operation");
}

/// An instance's store identity ends with it: once its deprovisioning is folded, the control plane's
/// pass removes the identity and its keys reach nothing; an active instance's identity stays.
#[tokio::test]
async fn a_deprovisioned_instance_s_store_keys_are_revoked_and_an_active_one_s_kept() {
    let api = TestApi::start().await;
    let s3 = system_tests::backups::BackupStoreRig::start();
    let admin = backup_store::access::AccessAdmin::new(&s3.config()).unwrap();
    let (leaving, staying) = (provision(&api, "leaving").await, provision(&api, "staying").await);
    let mut keys = Vec::new();
    for id in [leaving, staying] {
        let grant = backup_store::access::Grant { own: format!("acme/{id}"), read: vec![] };
        admin.grant(id, &grant).await.unwrap();
        keys.push(admin.issue_keys(id, &grant).await.unwrap());
    }
    let metrics = projections::store_access::StoreAccessMetrics::default();
    let none =
        projections::store_access::revoke_once(&api.state.read_models, &admin, &metrics).await.unwrap();
    assert!(none.is_empty(), "active instances keep their identity: {none:?}");

    let gone =
        call(&api, Method::DELETE, &format!("/v1/projects/acme/instances/{leaving}"), ACME_EDITOR_TOKEN)
            .await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "{}", gone.body);
    let folded = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.instance("acme", leaving).is_some_and(|v| v.deprovisioning.is_some()))
        .await;
    assert!(folded, "the deprovisioning was never folded");
    let revoked =
        projections::store_access::revoke_once(&api.state.read_models, &admin, &metrics).await.unwrap();
    assert_eq!(revoked, vec![leaving]);
    assert_eq!(metrics.revoked.get(), 1);
    assert_eq!(admin.instances_with_access().await.unwrap(), vec![staying]);
    let with = |keys: &backup_store::access::InstanceKeys| {
        backup_store::BackupStore::new(&backup_store::StoreConfig {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
            ..s3.config()
        })
        .unwrap()
    };
    with(&keys[1]).list(&format!("acme/{staying}/")).await.expect("the active instance's keys still work");
    // The store reloads identities on its own schedule: bounded wait for the refusal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while with(&keys[0]).list(&format!("acme/{leaving}/")).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "a revoked instance's keys still reach its prefix");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! A taken-over cluster: the attacks an agent's real credentials allow, each against a real nats-server,
//! the real projector and a real S3 store. Every other tenant's state, history and backups must stay as
//! they were, and every fact refused must be counted by its reason (ARCHITECTURE.md, *Threat model*).
//!
//! The attacker holds the credentials of cluster eu-1's agent (its own account, `streams::accounts`).
//! The victim is project `other`'s instance on eu-2, served by eu-2's honest agent on a simulator.

use std::time::Duration;

use async_nats::jetstream;
use axum::http::{Method, StatusCode};
use domain::observed::{ObservedEvent, ObservedPhase, ObservedState};
use futures::StreamExt as _;
use projections::Health;
use serde_json::json;
use streams::{instances::observed_subject, observed::ObservedMessage};
use system_tests::{
    ACME_ADMIN_TOKEN, ACME_EDITOR_TOKEN, OTHER_EDITOR_TOKEN, TestApi, backups::BackupStoreRig,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn call(api: &TestApi, method: Method, path: &str, token: &str) -> system_tests::Reply {
    api.call(method, path, None, &[("authorization", &format!("Bearer {token}"))]).await
}

async fn provision(api: &TestApi, project: &str, cluster: &str, token: &str) -> Uuid {
    let name = format!("db-{cluster}-{}", &Uuid::now_v7().simple().to_string()[24..]);
    let body =
        json!({"name": name, "service": "mongodb", "version": "7.0", "plan": "starter", "cluster": cluster});
    let path = format!("/v1/projects/{project}/instances");
    let created =
        api.call(Method::POST, &path, Some(&body), &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    created.body["instance_id"].as_str().unwrap().parse().unwrap()
}

/// Where most attacks happen: a control plane and the victim, project `other`'s instance on eu-2, healthy,
/// served by eu-2's honest agent on a simulator (both kept running while the scene lives).
struct Scene {
    api: TestApi,
    victim: Uuid,
    _cluster: (k8s_sim::Simulator, tokio::task::JoinHandle<anyhow::Result<()>>),
}

impl Scene {
    async fn set() -> Self {
        let api = TestApi::start().await;
        let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
        let honest = system_tests::cluster::agent(&api, "eu-2", address).await;
        let victim = provision(&api, "other", "eu-2", OTHER_EDITOR_TOKEN).await;
        wait_for(&api, "other", victim, Health::Healthy).await;
        Self { api, victim, _cluster: (sim, honest) }
    }
}

/// Waits until `project`'s instance `id` is in `state`.
async fn wait_for(api: &TestApi, project: &str, id: Uuid, state: Health) {
    let reached = api
        .state
        .read_models
        .wait_until(WAIT, |m| m.instance(project, id).is_some_and(|v| v.status.state == state))
        .await;
    assert!(reached, "{project}/{id} never became {state:?}");
}

/// A backup of `project`'s instance, asked for with `token`.
async fn backup(api: &TestApi, project: &str, instance: Uuid, token: &str) -> Uuid {
    let asked =
        call(api, Method::POST, &format!("/v1/projects/{project}/instances/{instance}/backups"), token).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    asked.body["backup_id"].as_str().unwrap().parse().unwrap()
}

/// The attacker: eu-1's agent's credentials, connected as that agent would be.
async fn attacker(api: &TestApi) -> (async_nats::Client, jetstream::Context) {
    let identity = api.agent_identity("eu-1");
    let client = identity
        .connect_options()
        .custom_inbox_prefix(streams::cluster_feed::agent_inbox_prefix("eu-1"))
        .connect(api.nats_server.address())
        .await
        .expect("connect with eu-1's agent's credentials");
    let jetstream = streams::accounts::agent_jetstream(client.clone());
    (client, jetstream)
}

/// Publishes `message` on `subject` as the attacker; whether JetStream stored it.
async fn publish(jetstream: &jetstream::Context, subject: String, message: &ObservedMessage) -> bool {
    let body = message.to_vec().unwrap();
    match jetstream.publish_with_headers(subject, message.headers(), body.into()).await {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack).await.is_ok_and(|a| a.is_ok()),
        Err(_) => false,
    }
}

/// The victim's history as its owner sees it.
async fn history(api: &TestApi, instance: Uuid) -> serde_json::Value {
    let reply = call(
        api,
        Method::GET,
        &format!("/v1/projects/other/instances/{instance}/history"),
        OTHER_EDITOR_TOKEN,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["items"].clone()
}

/// Waits until the intake gate has moved what the agents published and the projector has folded
/// everything the stream then holds.
async fn folded(api: &TestApi) {
    assert!(api.intakes_moved(WAIT).await, "facts stayed in the clusters' intakes");
    let mut events = api.state.events.clone();
    let last = events.info().await.unwrap().state.last_sequence;
    assert!(api.state.read_models.wait_for(last, WAIT).await, "the projector never reached sequence {last}");
}

fn failed_state(instance: Uuid, generation: u64) -> ObservedEvent {
    ObservedEvent::InstanceObserved(Box::new(ObservedState {
        instance_id: instance,
        observed_generation: None,
        desired_generation: generation,
        phase: ObservedPhase::Failed,
        ready_replicas: 0,
        desired_replicas: 1,
        running_version: None,
        config_hash: None,
        config: None,
        reason: Some("forged by eu-1".into()),
        applied: None,
        network: None,
        rendered: None,
        users: None,
    }))
}

#[tokio::test]
async fn forged_facts_about_another_tenant_s_instance_change_nothing_and_are_counted() {
    let scene = Scene::set().await;
    let (api, victim) = (&scene.api, scene.victim);
    let before = history(api, victim).await;
    let (_client, jetstream) = attacker(api).await;

    // On its own cluster's subject, a fact naming the victim: the victim is not placed on eu-1.
    let mut forged = ObservedMessage::new("eu-1", "other", victim, 1, failed_state(victim, 1));
    assert!(publish(&jetstream, forged.subject(), &forged).await, "eu-1 may publish on its own subjects");
    // Backdated removal, so that retention would delete the victim's backups at once.
    let mut removed = ObservedMessage::new(
        "eu-1",
        "other",
        victim,
        1,
        ObservedEvent::InstanceRemoved { instance_id: victim },
    );
    removed.time = chrono::DateTime::from_timestamp(0, 0).unwrap();
    assert!(publish(&jetstream, removed.subject(), &removed).await);
    // A payload naming eu-2 on eu-1's subject of an instance of its own: the payload disagrees.
    forged.cluster = "eu-2".into();
    assert!(publish(&jetstream, observed_subject("eu-1", "other", victim), &forged).await);
    // The victim's own subject on eu-2 is not eu-1's to publish on: the server refuses it.
    assert!(!publish(&jetstream, observed_subject("eu-2", "other", victim), &forged).await);
    // Nor the control plane's own facts.
    let verified = ObservedMessage::from_control_plane(
        "other",
        victim,
        ObservedEvent::BackupVerified { backup_id: Uuid::now_v7(), matches: false, detail: None },
    );
    assert!(!publish(&jetstream, verified.subject(), &verified).await);

    folded(api).await;
    let view = api.state.read_models.read().instance("other", victim).cloned().expect("the victim");
    assert_eq!(view.status.state, Health::Healthy, "{:?}", view.status);
    assert!(!view.removed);
    assert_eq!(history(api, victim).await, before, "the victim's history shows nothing new");
    assert_eq!(api.refused_facts("instance_not_placed_on_cluster"), 2);
    assert_eq!(api.refused_facts("payload_disagrees_with_subject"), 1);
}

#[tokio::test]
async fn a_hostile_agent_cannot_empty_the_backup_bucket() {
    let api = TestApi::start().await;
    let s3 = BackupStoreRig::start();
    let _keys = s3.serve_keys(&api).await;
    let store = s3.store();
    let control_plane = jetstream::new(api.nats_server.connect().await);
    let _worker = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(projections::backup_worker::run(
        api.state.read_models.clone(),
        store.clone(),
        control_plane,
    )));
    // The victim's backup, made by eu-2's honest agent into the real store and verified there.
    let (_sim2, address2) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let _honest = system_tests::cluster::agent_with_backups(&api, "eu-2", address2, Some(s3.target())).await;
    let victim = provision(&api, "other", "eu-2", OTHER_EDITOR_TOKEN).await;
    wait_for(&api, "other", victim, Health::Healthy).await;
    let victims_backup = backup(&api, "other", victim, OTHER_EDITOR_TOKEN).await;
    let verified = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.backups().get("other", victims_backup).is_some_and(|b| b.verified == Some(true))
        })
        .await;
    assert!(verified, "the victim's backup was never verified");
    let in_bucket = store.list("").await.unwrap();
    assert!(!in_bucket.is_empty());

    // The attacker's own instance on eu-1, made healthy by eu-1's agent before the takeover.
    let (_sim1, address1) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
    let honest_eu1 = system_tests::cluster::agent(&api, "eu-1", address1).await;
    let own = provision(&api, "acme", "eu-1", ACME_EDITOR_TOKEN).await;
    wait_for(&api, "acme", own, Health::Healthy).await;
    honest_eu1.abort();
    let (_client, jetstream) = attacker(&api).await;
    let own_backup = backup(&api, "acme", own, ACME_EDITOR_TOKEN).await;
    // It reports its own backup complete at an empty location: a later deletion of that backup used to
    // delete every object under "" with the control plane's keys.
    for event in [
        ObservedEvent::BackupStarted { backup_id: own_backup },
        ObservedEvent::BackupCompleted {
            backup_id: own_backup,
            location: String::new(),
            size_bytes: 1,
            sha256: None,
            duration_ms: 1,
        },
        // Then failed, so it may be deleted (a finished backup's outcome never changes: on a store that
        // took the completion, this changes nothing).
        ObservedEvent::BackupFailed { backup_id: own_backup, reason: "ended".into() },
        // And, on its own subject, the victim's backup deleted: only the control plane states that.
        ObservedEvent::BackupDeleted { backup_id: victims_backup },
    ] {
        let message = ObservedMessage::new("eu-1", "acme", own, 1, event);
        assert!(publish(&jetstream, message.subject(), &message).await);
    }
    folded(&api).await;
    let deleted = call(
        &api,
        Method::DELETE,
        &format!("/v1/projects/acme/instances/{own}/backups/{own_backup}"),
        ACME_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    let gone = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.backups().get("acme", own_backup).is_some_and(|b| b.state == projections::BackupState::Deleted)
        })
        .await;
    assert!(gone, "the attacker's backup deletion never finished");

    assert_eq!(
        store.list("").await.unwrap(),
        in_bucket,
        "every other tenant's backup is still in the bucket"
    );
    let view = api.state.read_models.read().backups().get("other", victims_backup).cloned().unwrap();
    assert_eq!(view.state, projections::BackupState::Completed, "the victim's backup is not marked deleted");
    assert_eq!(api.refused_facts("backup_location_outside_instance"), 1);
    assert_eq!(api.refused_facts("control_plane_fact_from_cluster"), 1);
}

#[tokio::test]
async fn a_pull_with_a_foreign_reply_subject_delivers_into_the_agent_s_own_account_only() {
    let scene = Scene::set().await;
    let (api, victim) = (&scene.api, scene.victim);
    // Messages waiting on eu-1's consumer (no agent reads it): one per pull below.
    for _ in 0..4 {
        provision(api, "acme", "eu-1", ACME_EDITOR_TOKEN).await;
    }
    let mut events = api.state.events.clone();
    let before = events.info().await.unwrap().state.last_sequence;
    let (client, _) = attacker(api).await;
    let settings = streams::Settings::default();
    // Into another cluster's facts, another cluster's decisions, and the read-model bucket.
    let targets = [
        observed_subject("eu-2", "other", victim),
        streams::instances::instance_subject("eu-2", "other", victim),
        format!("$KV.{}.attack", settings.read_models_bucket),
    ];
    // What the control plane's account sees there (internal subscribers such as dashboards read these
    // subjects directly, ARCHITECTURE.md).
    let control_plane = api.nats_server.connect().await;
    let mut watchers = Vec::new();
    for target in &targets {
        watchers.push(control_plane.subscribe(target.clone()).await.unwrap());
    }
    control_plane.flush().await.unwrap();
    let next = format!(
        "{}.CONSUMER.MSG.NEXT.{}.{}",
        streams::accounts::AGENT_API_PREFIX,
        streams::cluster_feed::desired_stream_name(&settings, "eu-1"),
        streams::cluster_feed::agent_consumer_name("eu-1")
    );
    let pull = json!({"batch": 1, "expires": 2_000_000_000u64}).to_string();
    for reply in &targets {
        client.publish_with_reply(next.clone(), reply.clone(), pull.clone().into()).await.unwrap();
    }
    // The server answers pulls in order: once a last, honest one is answered, the three were delivered.
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    client.publish_with_reply(next, inbox, pull.into()).await.unwrap();
    let answered =
        tokio::time::timeout(WAIT, answers.next()).await.expect("the last pull was never answered");
    assert!(answered.is_some());
    // The server sent whatever went to those subjects before it answered the last pull; a round trip on
    // the control plane's connection brings everything it sent there before.
    control_plane.flush().await.unwrap();
    for (target, watcher) in targets.iter().zip(&mut watchers) {
        let delivered = futures::FutureExt::now_or_never(watcher.next()).flatten();
        assert!(
            delivered.is_none(),
            "the server delivered eu-1's feed to {target} in the control plane's account"
        );
    }

    let after = events.info().await.unwrap().state.last_sequence;
    let stored = streams::history::read_instance_history(
        &api.state.events,
        &["eu-2".to_owned()],
        "other",
        victim,
        streams::history::HistoryRange { after: before, until: None, limit: 100 },
    )
    .await
    .unwrap();
    assert!(stored.is_empty(), "the victim's subjects gained {} messages ({before}..{after})", stored.len());
    let control_plane = jetstream::new(api.nats_server.connect().await);
    let bucket = control_plane.get_key_value(&settings.read_models_bucket).await.unwrap();
    assert!(bucket.get("attack").await.unwrap().is_none(), "the read-model bucket gained a record");
}

/// Flooding: eu-1's agent publishes facts as fast as it can, each about a made-up instance of its own
/// cluster, so there is no end of subjects. They land in eu-1's intake only (`streams::intake`), which
/// refuses what exceeds its limits; the intake gate (`projections::intake`) moves them into the event
/// stream, which is never purged, no faster than eu-1's rate; and meanwhile a change to the victim's
/// instance on eu-2 goes through as if nothing happened. Before the intake, every one of these facts went
/// straight into the event stream.
#[tokio::test]
async fn a_flooding_agent_fills_only_its_own_intake_and_other_clusters_go_on() {
    let scene = Scene::set().await;
    let (api, victim) = (&scene.api, scene.victim);
    let mut events = api.state.events.clone();
    let stored_before = events.info().await.unwrap().state.messages;
    let (_client, jetstream) = attacker(api).await;
    let settings = streams::Settings::default();
    let limits = projections::intake::IntakeLimits::default();

    let flood = usize::try_from(settings.intake_max_messages).unwrap() + 6_000;
    let started = tokio::time::Instant::now();
    let (mut accepted, mut refused) = (0usize, 0usize);
    for _ in 0..flood / 500 {
        let mut acks = Vec::with_capacity(500);
        for _ in 0..500 {
            let made_up = Uuid::now_v7();
            let fact = ObservedMessage::new("eu-1", "acme", made_up, 1, failed_state(made_up, 1));
            let body = fact.to_vec().unwrap();
            acks.push(
                jetstream.publish_with_headers(fact.subject(), fact.headers(), body.into()).await.unwrap(),
            );
        }
        for ack in acks {
            match ack.await {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    let flooded_for = started.elapsed();
    assert!(refused > 0, "eu-1's intake took all {accepted} facts: no limit");
    let intake = jetstream::new(api.nats_server.connect().await);
    let mut intake = intake.get_stream(streams::intake::stream_name("eu-1")).await.unwrap();
    let waiting = intake.info().await.unwrap().state.messages;
    assert!(waiting <= u64::try_from(settings.intake_max_messages).unwrap(), "{waiting} facts waiting");

    // The victim's cluster goes on: a plan change is applied and observed while eu-1's facts still wait.
    let path = format!("/v1/projects/other/instances/{victim}");
    let body = json!({"plan": "standard"});
    let auth = format!("Bearer {OTHER_EDITOR_TOKEN}");
    let changed = api.call(Method::PATCH, &path, Some(&body), &[("authorization", &auth)]).await;
    assert_eq!(changed.status, StatusCode::ACCEPTED, "{}", changed.body);
    let operation = changed.operation_id();
    let succeeded = api
        .state
        .read_models
        .wait_until(WAIT, |m| {
            m.operation("other", operation).is_some_and(|o| o.state == projections::OperationState::Succeeded)
        })
        .await;
    assert!(succeeded, "the victim's change never succeeded during the flood");
    let still_waiting = intake.info().await.unwrap().state.messages;
    assert!(
        still_waiting > 1_000,
        "eu-1's intake was drained ({still_waiting} left): the flood was not held back"
    );

    // Past its burst, eu-1's facts wait for its rate, which is counted; what eu-1 added to the event
    // stream is bounded by that rate, whatever it sent.
    let label = projections::intake::ClusterLabels { cluster: "eu-1".into() };
    let throttled = || api.intake_metrics.throttled.get_or_create(&label).get();
    let deadline = tokio::time::Instant::now() + WAIT;
    while throttled() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "eu-1's facts never waited for its rate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gained = events.info().await.unwrap().state.messages - stored_before;
    let elapsed = started.elapsed().as_secs_f64();
    let bound = f64::from(limits.burst.get()) + f64::from(limits.per_second.get()) * elapsed + 100.0;
    assert!(
        (gained as f64) < bound,
        "the event stream gained {gained} messages in {elapsed:.1} s (flood of {flood} sent in {flooded_for:?})"
    );
    let history = history(api, victim).await.to_string();
    assert!(!history.contains("eu-1"), "the victim's history shows eu-1's facts: {history}");
    // The facts that did get through name instances eu-1 does not run: refused and counted.
    let refusals =
        api.state.read_models.wait_until(WAIT, |_| api.refused_facts("unknown_instance") > 0).await;
    assert!(refusals, "the made-up instances' facts were not refused");
}

/// An agent's account holds at most `streams::accounts::AGENT_MAX_CONNECTIONS` connections: a taken-over
/// agent cannot use up the server's.
#[tokio::test]
async fn an_agent_account_cannot_open_more_than_its_connections() {
    let api = TestApi::start().await;
    let mut held = Vec::new();
    for _ in 0..streams::accounts::AGENT_MAX_CONNECTIONS {
        held.push(attacker(&api).await.0);
    }
    let identity = api.agent_identity("eu-1");
    let refused = identity
        .connect_options()
        .connection_timeout(Duration::from_secs(2))
        .connect(api.nats_server.address());
    let refused = tokio::time::timeout(Duration::from_secs(5), refused).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a connection beyond the account's {} was accepted",
        streams::accounts::AGENT_MAX_CONNECTIONS
    );
    // Another cluster's agent is not affected.
    let other = api.agent_identity("eu-2").connect_options().connect(api.nats_server.address()).await;
    assert!(other.is_ok(), "eu-2's agent could not connect: {:?}", other.err());
}

/// Asks for `project`'s instance `id`'s store keys on `subject`, as an agent does; the answer opened.
async fn ask_keys(
    client: &async_nats::Client,
    subject: String,
    project: &str,
    id: Uuid,
) -> Result<streams::store_access::StoreAccessReply, String> {
    let ours = nkeys::XKey::new();
    let request = streams::store_access::StoreAccessRequest {
        project: project.into(),
        instance_id: id,
        reply_key: ours.public_key(),
    };
    let asked = client.request(subject, serde_json::to_vec(&request).unwrap().into());
    let answer = tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    match serde_json::from_slice::<streams::credentials::SealedReply>(&answer.payload) {
        Ok(sealed) => sealed.open_as(&ours).map_err(|e| e.to_string()),
        Err(_) => serde_json::from_slice(&answer.payload).map_err(|e| e.to_string()),
    }
}

#[tokio::test]
async fn a_taken_over_agent_gets_store_keys_for_its_own_cluster_s_instances_only_and_they_reach_nothing_else()
{
    let scene = Scene::set().await;
    let api = &scene.api;
    let s3 = BackupStoreRig::start();
    let metrics = projections::store_access::StoreAccessMetrics::default();
    let _keys = s3.serve_keys_counted(api, metrics.clone()).await;
    // The victim's backups in the store (the victim is project other's instance on eu-2).
    let admin_store = s3.store();
    let victims_object = backup_store::object_key("other", scene.victim, Uuid::now_v7());
    admin_store.put(&victims_object, b"the victim's dump".to_vec()).await.unwrap();
    let own = provision(api, "acme", "eu-1", ACME_EDITOR_TOKEN).await;
    let (client, _) = attacker(api).await;
    let own_subject = streams::store_access::request_subject("eu-1");

    // The victim's keys, asked on eu-1's own subject: refused, counted.
    let refused = ask_keys(&client, own_subject.clone(), "other", scene.victim).await.expect("an answer");
    assert!(
        matches!(&refused, streams::store_access::StoreAccessReply::Refused { reason } if reason.contains("not placed on eu-1")),
        "{refused:?}"
    );
    assert_eq!(
        metrics
            .refused
            .get_or_create(&projections::store_access::RefusalLabels { reason: "not_placed_there".into() })
            .get(),
        1
    );
    // Asked on eu-2's subject, where the victim is: the account cannot even publish there.
    let foreign =
        ask_keys(&client, streams::store_access::request_subject("eu-2"), "other", scene.victim).await;
    assert!(foreign.is_err(), "a request on another cluster's subject was answered: {foreign:?}");
    assert_eq!(metrics.granted.get(), 0, "no keys were given for another cluster's instance");

    // Its own instance's keys: given, and they reach that instance's prefix only.
    let granted = ask_keys(&client, own_subject, "acme", own).await.expect("an answer");
    let streams::store_access::StoreAccessReply::Granted { access_key_id, secret_access_key, read } = granted
    else {
        panic!("its own instance's keys were refused: {granted:?}");
    };
    assert!(read.is_empty(), "{read:?}");
    let as_attacker = backup_store::BackupStore::new(&backup_store::StoreConfig {
        access_key_id,
        secret_access_key,
        ..s3.config()
    })
    .unwrap();
    as_attacker.list(&format!("acme/{own}/")).await.expect("its own prefix is reachable");
    as_attacker
        .list(&format!("other/{}/", scene.victim))
        .await
        .expect_err("the victim's backups are not listable");
    as_attacker.list("").await.expect_err("the bucket is not listable");
    as_attacker.delete(&victims_object).await.expect_err("the victim's backup cannot be deleted");
    as_attacker
        .verify(&victims_object, 17, &"0".repeat(64))
        .await
        .expect_err("the victim's backup cannot be read");
    assert_eq!(admin_store.list(&format!("other/{}/", scene.victim)).await.unwrap().len(), 1, "untouched");
}

//! The write-path scenarios: the raw-publish baseline, the event store with fresh and deep aggregates,
//! provisions with name reservations, and PATCH through the HTTP API.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use domain::{
    Instance, InstanceCommand, InstanceServices, NameRegistry, NameReservationError, ProvisionInstance,
    ServiceType, UpdateInstance,
};
use futures::{StreamExt as _, TryStreamExt as _, future::join_all};
use serde_json::json;
use streams::{
    CommandMetadata, JetStreamStore, Topology,
    instances::{InstanceCommands, aggregate_id},
};
use uuid::Uuid;

use super::Options;
use crate::measure::drive;

pub(super) fn provision(id: Uuid, name: String, cluster: &str) -> InstanceCommand {
    InstanceCommand::Provision(ProvisionInstance::new(
        id,
        "bench",
        name,
        ServiceType::Postgresql,
        "16",
        "starter",
        cluster,
    ))
}

pub(super) fn describe(text: String) -> InstanceCommand {
    InstanceCommand::Update(UpdateInstance { description: Some(text), ..Default::default() })
}

pub(super) fn meta(op: domain::OperationKind) -> CommandMetadata {
    CommandMetadata::new(op, "bench")
}

/// Grants every name: the benchmark makes each name unique itself. Keeps a registry's cost (the KV's,
/// measured by the provision scenario) out of the event store's figures.
pub(super) struct UniqueNames;

#[async_trait::async_trait]
impl NameRegistry for UniqueNames {
    async fn reserve(&self, _: &str, _: &str, _: Uuid) -> Result<(), NameReservationError> {
        Ok(())
    }
}

/// The event store with a registry that grants every name: measures the store, not the KV.
pub(super) fn bare_store(topology: &Topology, capacity: usize) -> BareStore {
    let store = JetStreamStore::new(
        topology.jetstream.clone(),
        topology.events.clone(),
        "cp.evt",
        capacity,
        topology.settings.commit_mode,
    );
    Arc::new((store, InstanceServices::new(Arc::new(UniqueNames))))
}

pub(super) type BareStore = Arc<(JetStreamStore<Instance>, InstanceServices)>;

/// A store whose cache already holds every deep aggregate, as a long-running API process's does: the
/// warm-cache scenario measures commands, not the first load of each aggregate (the no-cache scenario
/// does that). Built once and shared by the scenario's runs, which keep it warm.
pub(super) async fn warm_store(topology: &Topology, ids: &[String]) -> anyhow::Result<BareStore> {
    let store = bare_store(topology, 1_000_000);
    futures::stream::iter(ids)
        .map(|id| store.0.load(id))
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| anyhow::anyhow!("warming the cache: {e}"))?;
    Ok(store)
}

/// Size of a typical stored command (an update of a provisioned instance), for a fair raw baseline.
pub(super) fn typical_payload() -> Bytes {
    let sample = json!({
        "aggregate_type": "instance", "aggregate_id": format!("bench.{}", Uuid::now_v7()), "first_version": 5,
        "events": [{"type": "DescriptionChanged", "schema": "1", "data": {"description": "change 123456"}}],
        "metadata": {"command_id": Uuid::now_v7(), "operation": "update", "actor": "bench", "time": "2026-11-25T00:00:00Z"},
        "snapshot": {"version": 1, "state": {"spec": {"id": Uuid::now_v7(), "project": "bench", "name": "db-00001",
            "service": "postgresql", "version": "16", "plan": "starter",
            "resources": {"cpu_millis": 500, "memory_mib": 1024, "replicas": 1}, "storage_gib": 10, "config": {},
            "description": "change 123456", "deletion_protection": false, "cluster": "c1"}, "lifecycle": "active"}}
    });
    Bytes::from(serde_json::to_vec(&sample).expect("json"))
}

/// A provision's message as the store writes it: the whole spec in the event and again in the snapshot.
pub(super) fn provision_payload() -> Bytes {
    let spec = json!({"id": Uuid::now_v7(), "project": "bench", "name": "f64-0-12-123456",
        "service": "postgresql", "version": "16", "plan": "starter",
        "resources": {"cpu_millis": 500, "memory_mib": 1024, "replicas": 1}, "storage_gib": 10, "config": {},
        "description": "", "deletion_protection": false, "cluster": "c0"});
    let mut event = spec.clone();
    event["instance_id"] = spec["id"].clone();
    let sample = json!({
        "aggregate_type": "instance", "aggregate_id": format!("bench.{}", Uuid::now_v7()), "first_version": 1,
        "events": [{"type": "InstanceProvisioned", "schema": "1", "data": event}],
        "metadata": {"command_id": Uuid::now_v7(), "operation": "provision", "actor": "bench", "time": "2026-11-25T00:00:00Z"},
        "snapshot": {"version": 1, "state": {"spec": spec, "lifecycle": "active"}}
    });
    Bytes::from(serde_json::to_vec(&sample).expect("json"))
}

/// What the raw baseline publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawSubjects {
    /// each worker cycles over 16 subjects with an update-sized payload (the baseline for deep aggregates)
    Existing,
    /// every publish creates a subject (expected sequence 0) with a provision-sized payload (the baseline
    /// for fresh aggregates, which do exactly that)
    New,
}

pub(super) async fn raw(
    js: &jetstream::Context,
    workers: usize,
    duration: Duration,
    subjects: RawSubjects,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let payload = match subjects {
        RawSubjects::Existing => typical_payload(),
        RawSubjects::New => provision_payload(),
    };
    let js = js.clone();
    // Each worker cycles over its own 16 subjects, tracking their last sequence like the store does.
    let state: Arc<Vec<tokio::sync::Mutex<Vec<u64>>>> =
        Arc::new((0..workers).map(|_| tokio::sync::Mutex::new(vec![0; 16])).collect());
    drive(workers, duration, move |worker, n| {
        let (js, payload, state) = (js.clone(), payload.clone(), state.clone());
        async move {
            let slot = (n % 16) as usize;
            let subject = match subjects {
                RawSubjects::Existing => format!("bench.raw.{call}.w{worker}s{slot}"),
                RawSubjects::New => format!("bench.raw.{call}.w{worker}n{n}"),
            };
            let mut last = state[worker].lock().await;
            if subjects == RawSubjects::New {
                last[slot] = 0;
            }
            let message = PublishMessage::build()
                .payload(payload)
                .message_id(Uuid::now_v7().to_string())
                .expected_last_subject_sequence(last[slot]);
            let ack = js.send_publish(subject, message).await?.await;
            match ack {
                Ok(ack) => last[slot] = ack.sequence,
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    anyhow::bail!("raw baseline conflict")
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
    })
    .await
}

pub(super) async fn prepare_deep(topology: &Topology, options: &Options) -> anyhow::Result<Vec<String>> {
    let bare = bare_store(topology, 1_000_000);
    let (store, services) = &*bare;
    let ids: Vec<Uuid> = (0..options.deep_instances).map(|_| Uuid::now_v7()).collect();
    // Round-robin over instances, 64 at a time, so each instance's events are spread over the whole
    // stream, among thousands of other instances' events.
    for round in 0..=options.deep_events {
        for chunk in ids.chunks(64) {
            join_all(chunk.iter().enumerate().map(|(i, id)| {
                let command = if round == 0 {
                    provision(*id, format!("deep-{id}"), &format!("c{}", i % 10))
                } else {
                    describe(format!("round {round}"))
                };
                async move {
                    store
                        .execute(
                            &aggregate_id("bench", *id),
                            command,
                            services,
                            None,
                            meta(domain::OperationKind::Update),
                        )
                        .await
                }
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("preparing deep aggregates: {e}"))?;
        }
    }
    Ok(ids.iter().map(|id| aggregate_id("bench", *id)).collect())
}

/// Commands through `store`: provisions of fresh aggregates, or with `deep`, updates of those aggregates.
pub(super) async fn store_scenario(
    store: BareStore,
    workers: usize,
    duration: Duration,
    deep: Option<Arc<Vec<String>>>,
    run: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    drive(workers, duration, move |worker, n| {
        let (store, deep) = (store.clone(), deep.clone());
        async move {
            let (store, services) = &*store;
            let is_deep = deep.is_some();
            let (id, command) = match deep {
                // Each worker owns a disjoint slice of the deep aggregates and walks it.
                Some(ids) => {
                    let per_worker = ids.len() / workers;
                    let id = ids[worker * per_worker + (n as usize % per_worker)].clone();
                    (id, describe(format!("run {run} worker {worker} n {n}")))
                }
                None => {
                    let id = Uuid::now_v7();
                    (aggregate_id("bench", id), provision(id, format!("f{workers}-{run}-{worker}-{n}"), "c0"))
                }
            };
            let result = match is_deep {
                true => {
                    store.execute(&id, command, services, None, meta(domain::OperationKind::Update)).await
                }
                // Fresh ids, as the API provisions them: nothing to load.
                false => {
                    store.execute_new(&id, command, services, meta(domain::OperationKind::Provision)).await
                }
            };
            result.map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        }
    })
    .await
}

pub(super) async fn provision_scenario(
    commands: &InstanceCommands,
    workers: usize,
    duration: Duration,
    run: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let commands = Arc::new(commands.clone());
    drive(workers, duration, move |worker, n| {
        let commands = commands.clone();
        async move {
            let id = Uuid::now_v7();
            let command = provision(id, format!("p{workers}-{run}-{worker}-{n}"), "c1");
            commands
                .provision_new("bench", id, command, meta(domain::OperationKind::Provision))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        }
    })
    .await
}

pub(super) async fn http_scenario(
    base: &str,
    client: &reqwest::Client,
    workers: usize,
    duration: Duration,
    run: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut paths = Vec::new();
    for worker in 0..workers {
        let body = json!({"name": format!("http-{run}-{worker}"), "service": "postgresql", "version": "16", "plan": "starter", "cluster": "c1"});
        let reply = client.post(format!("{base}/v1/projects/bench/instances")).json(&body).send().await?;
        anyhow::ensure!(
            reply.status() == 202,
            "provision for the HTTP benchmark failed: {}",
            reply.text().await?
        );
        let operation: serde_json::Value = reply.json().await?;
        paths.push(format!(
            "{base}/v1/projects/bench/instances/{}",
            operation["instance_id"].as_str().unwrap_or_default()
        ));
    }
    let paths = Arc::new(paths);
    let client = client.clone();
    drive(workers, duration, move |worker, n| {
        let (client, paths) = (client.clone(), paths.clone());
        async move {
            let reply = client
                .patch(&paths[worker])
                .header("content-type", "application/merge-patch+json")
                .body(format!("{{\"description\": \"n{n}\"}}"))
                .send()
                .await?;
            anyhow::ensure!(reply.status() == 202, "PATCH answered {}", reply.status());
            Ok(())
        }
    })
    .await
}

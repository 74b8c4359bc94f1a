//! Write-path benchmarks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use domain::{
    Instance, InstanceCommand, InstanceServices, NameRegistry, NameReservationError, ProvisionInstance,
    ServiceType, UpdateInstance,
};
use futures::{StreamExt as _, TryStreamExt as _, future::join_all};
use serde_json::json;
use streams::{
    CommandMetadata, CommitMode, JetStreamStore, Settings, Topology,
    instances::{InstanceCommands, aggregate_id},
};
use testkit::Sync;

use crate::measure::{Figure, Servers, apply_patiently, drive, median, sample, stats};
use uuid::Uuid;

/// Benchmark options.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// runs per figure (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// seconds per run
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// deep aggregates prepared for the deep scenarios
    #[arg(long, default_value_t = 2000)]
    deep_instances: usize,
    /// events each deep aggregate holds before measuring
    #[arg(long, default_value_t = 10)]
    deep_events: usize,
    /// only this durability setting: `default` or `always`
    #[arg(long)]
    sync: Option<String>,
    /// the event store's commit mode: `grouped`, `one-by-one`, or `both`; by default the one the API uses
    /// with that sync setting (grouped with `always`, one by one with the default)
    #[arg(long)]
    commit: Option<String>,
    /// only these scenarios (comma separated): fresh, deep, nocache, provision, http; the raw baselines
    /// always run
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// replicas of every stream: 1 (one nats-server) or 3 (a three-node cluster on this machine)
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    replicas: usize,
    /// concurrent clients of the HTTP scenarios (comma separated)
    #[arg(long, value_delimiter = ',', default_value = "64")]
    http_clients: Vec<usize>,
}

fn parse_replicas(value: &str) -> Result<usize, String> {
    match value {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("1 or 3".into()),
    }
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// Where the benchmark is: the server (for its CPU time), the raw baseline's stream, run length.
struct Bench<'a> {
    options: &'a Options,
    server_pids: Vec<u32>,
    raw: jetstream::Context,
    duration: Duration,
}

impl<'a> Bench<'a> {
    /// Connects to `server` and creates the topology and the raw baseline's stream.
    async fn start(
        server: &Servers,
        options: &'a Options,
        settings: &Settings,
    ) -> anyhow::Result<(async_nats::Client, Topology, Self)> {
        let client =
            async_nats::connect(server.url()).await.context("connecting to the benchmark's nats-server")?;
        let topology = apply_patiently(settings, &jetstream::new(client.clone())).await?;
        raw_stream(&topology.jetstream, settings).await?;
        let bench = Self {
            options,
            server_pids: server.pids(),
            raw: topology.jetstream.clone(),
            duration: Duration::from_secs_f64(options.seconds),
        };
        Ok((client, topology, bench))
    }

    /// Runs `scenario` and the raw baseline alternately (baseline first in even runs, last in odd ones),
    /// so that drift on this noisy machine (other load, the stream growing) hits both alike; the ratio is
    /// the median of the per-pair ratios.
    async fn compare<S, Fut>(
        &self,
        name: &str,
        in_flight: usize,
        baseline: RawSubjects,
        mut scenario: S,
    ) -> anyhow::Result<Figure>
    where
        S: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<(f64, Vec<Duration>)>>,
    {
        eprintln!("  {name}, {in_flight} in flight…");
        let (mut raws, mut subjects, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..self.options.runs {
            let raw = || sample(&self.server_pids, raw(&self.raw, in_flight, self.duration, baseline));
            let (raw_sample, subject) = if r % 2 == 0 {
                let raw_sample = raw().await?;
                (raw_sample, sample(&self.server_pids, scenario(r)).await?)
            } else {
                let subject = sample(&self.server_pids, scenario(r)).await?;
                (raw().await?, subject)
            };
            ratios.push(subject.rate / raw_sample.rate);
            raws.push(raw_sample);
            subjects.push(subject);
        }
        Ok(Figure {
            name: name.into(),
            in_flight,
            stats: stats(&subjects),
            baseline: stats(&raws),
            ratio: median(ratios),
        })
    }
}

/// A stream for the raw baseline with the event stream's settings, so that raw messages are stored
/// alike but never reach the event stream's readers (the projector).
async fn raw_stream(jetstream: &jetstream::Context, settings: &Settings) -> anyhow::Result<()> {
    let mut config = settings.events_stream_config();
    config.name = "BENCH_RAW".into();
    config.subjects = vec!["bench.raw.>".into()];
    config.description = Some("raw publish baseline of the benchmark".into());
    jetstream.create_or_update_stream(config).await.context("creating the raw baseline's stream")?;
    Ok(())
}

fn provision(id: Uuid, name: String, cluster: &str) -> InstanceCommand {
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

fn describe(text: String) -> InstanceCommand {
    InstanceCommand::Update(UpdateInstance { description: Some(text), ..Default::default() })
}

fn meta(op: domain::OperationKind) -> CommandMetadata {
    CommandMetadata::new(op, "bench")
}

/// Grants every name: the benchmark makes each name unique itself. Keeps a registry's cost (the KV's,
/// measured by the provision scenario) out of the event store's figures.
struct UniqueNames;

#[async_trait::async_trait]
impl NameRegistry for UniqueNames {
    async fn reserve(&self, _: &str, _: &str, _: Uuid) -> Result<(), NameReservationError> {
        Ok(())
    }
}

/// The event store with a registry that grants every name: measures the store, not the KV.
fn bare_store(topology: &Topology, capacity: usize) -> BareStore {
    let store = JetStreamStore::new(
        topology.jetstream.clone(),
        topology.events.clone(),
        "cp.evt",
        capacity,
        topology.settings.commit_mode,
    );
    Arc::new((store, InstanceServices { names: Arc::new(UniqueNames) }))
}

type BareStore = Arc<(JetStreamStore<Instance>, InstanceServices)>;

/// A store whose cache already holds every deep aggregate, as a long-running API process's does: the
/// warm-cache scenario measures commands, not the first load of each aggregate (the no-cache scenario
/// does that). Built once and shared by the scenario's runs, which keep it warm.
async fn warm_store(topology: &Topology, ids: &[String]) -> anyhow::Result<BareStore> {
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
fn typical_payload() -> Bytes {
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
fn provision_payload() -> Bytes {
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
enum RawSubjects {
    /// each worker cycles over 16 subjects with an update-sized payload (the baseline for deep aggregates)
    Existing,
    /// every publish creates a subject (expected sequence 0) with a provision-sized payload (the baseline
    /// for fresh aggregates, which do exactly that)
    New,
}

async fn raw(
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

async fn prepare_deep(topology: &Topology, options: &Options) -> anyhow::Result<Vec<String>> {
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
async fn store_scenario(
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

async fn provision_scenario(
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

async fn http_scenario(
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

async fn bench_sync(sync: Sync, commit_mode: CommitMode, options: &Options) -> anyhow::Result<Vec<Figure>> {
    let settings = Settings { commit_mode, replicas: options.replicas, ..Settings::default() };
    let server = Servers::start(sync, options.replicas);
    let (_, topology, bench) = Bench::start(&server, options, &settings).await?;
    let duration = bench.duration;
    let mut figures = Vec::new();
    let deep = if options.wants("deep") || options.wants("nocache") {
        eprintln!(
            "  preparing {} deep aggregates of {} events each…",
            options.deep_instances,
            options.deep_events + 1
        );
        Arc::new(prepare_deep(&topology, options).await?)
    } else {
        Arc::default()
    };
    let warm = match options.wants("deep") {
        true => Some(warm_store(&topology, &deep).await?),
        false => None,
    };
    for workers in [1, 64] {
        if options.wants("fresh") {
            figures.push(
                bench
                    .compare("event store, fresh aggregates", workers, RawSubjects::New, |r| {
                        store_scenario(bare_store(&topology, 1_000_000), workers, duration, None, r)
                    })
                    .await?,
            );
        }
        if let Some(warm) = &warm {
            figures.push(
                bench
                    .compare(
                        "event store, deep aggregates (warm cache)",
                        workers,
                        RawSubjects::Existing,
                        |r| store_scenario(warm.clone(), workers, duration, Some(deep.clone()), r),
                    )
                    .await?,
            );
        }
        if options.wants("nocache") {
            figures.push(
                bench
                    .compare("event store, deep aggregates (no cache)", workers, RawSubjects::Existing, |r| {
                        store_scenario(bare_store(&topology, 1), workers, duration, Some(deep.clone()), r)
                    })
                    .await?,
            );
        }
    }
    let commands = InstanceCommands::new(&topology, 100_000);
    for workers in [1, 64].into_iter().filter(|_| options.wants("provision")) {
        figures.push(
            bench
                .compare("provision incl. KV name reservation", workers, RawSubjects::New, |r| {
                    provision_scenario(&commands, workers, duration, r)
                })
                .await?,
        );
    }

    // The HTTP API over real TCP, served from this process; each variant on a server of its own with the
    // same settings, so that a projector folds only the API's traffic, not the scenarios above.
    drop(server);
    for with_projector in [false, true].into_iter().filter(|_| options.wants("http")) {
        for &clients in &options.http_clients {
            let server = Servers::start(sync, options.replicas);
            figures.push(http_figure(&server, options, &settings, clients, with_projector).await?);
        }
    }
    Ok(figures)
}

/// PATCHes through the HTTP API with `clients` concurrent clients; with the projector keeping the read models current in
/// this process (as `./dev up` runs them: on this machine they share the same two cores) or without.
async fn http_figure(
    server: &Servers,
    options: &Options,
    settings: &Settings,
    clients: usize,
    with_projector: bool,
) -> anyhow::Result<Figure> {
    let (client, topology, bench) = Bench::start(server, options, settings).await?;
    let projector_metrics = projections::ProjectorMetrics::default();
    if with_projector {
        let bucket = streams::read_models::ReadModelBucket::new(&topology);
        projections::Projector::new(topology.events.clone(), bucket, projector_metrics.clone()).spawn();
    }
    let state = api::AppState::start(client.clone(), settings).await?;
    let read_models = state.read_models.clone();
    state.clusters.register(&domain::Cluster { name: "c1".into(), region: "r".into() }).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api::app(state)).await });
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;
    let name = if with_projector { "HTTP API, PATCH (+ projector)" } else { "HTTP API, PATCH (API alone)" };
    let figure = bench
        .compare(name, clients, RawSubjects::Existing, |r| {
            http_scenario(&base, &http, clients, bench.duration, r)
        })
        .await?;
    if with_projector {
        let last = topology.events.clone().info().await?.state.last_sequence;
        let caught_up = Instant::now();
        anyhow::ensure!(read_models.wait_for(last, Duration::from_secs(120)).await, "read models behind");
        eprintln!(
            "  projector: {} messages, {} records written in {} flushes; caught up {:.0} ms after the last HTTP run",
            projector_metrics.applied.get(),
            projector_metrics.records_written.get(),
            projector_metrics.flushes.get(),
            caught_up.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(figure)
}

fn print(title: &str, figures: &[Figure]) {
    println!("\n== {title} ==");
    println!(
        "{:<42} {:>4} {:>9} {:>7} {:>7} {:>8} {:>9} {:>8} {:>8} {:>7}",
        "scenario", "in", "cmds/s", "p50 ms", "p99 ms", "CPU c+s", "raw/s", "raw p99", "raw c+s", "vs raw"
    );
    for f in figures {
        let (s, b) = (&f.stats, &f.baseline);
        println!(
            "{:<42} {:>4} {:>9.0} {:>7.2} {:>7.2} {:>8} {:>9.0} {:>8.2} {:>8} {:>7.2}",
            f.name,
            f.in_flight,
            s.rate,
            s.p50,
            s.p99,
            format!("{:.0}+{:.0}", s.client_us, s.server_us),
            b.rate,
            b.p99,
            format!("{:.0}+{:.0}", b.client_us, b.server_us),
            f.ratio
        );
    }
    println!(
        "CPU c+s: CPU microseconds per command of this process (client; with HTTP also the API) + of nats-server.\n\
         raw: publish with an expected-sequence check to a stream of the same settings, measured alternately \
         with each scenario\n(new subjects with a provision-sized payload for fresh aggregates and \
         provisions, else existing subjects); vs raw: median of the per-pair ratios."
    );
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    println!(
        "write-path benchmark: medians of {} runs of {}s; nats-server {}; ratios against raw publish measured in this run",
        options.runs,
        options.seconds,
        testkit::nats_server_binary().map(|p| p.display().to_string()).unwrap_or_default()
    );
    let syncs: Vec<(Sync, &str)> = match options.sync.as_deref() {
        Some("default") => vec![(Sync::Default, "sync: NATS default (fsync every 2 min)")],
        Some("always") => vec![(Sync::Always, "sync_interval: always")],
        _ => vec![
            (Sync::Default, "sync: NATS default (fsync every 2 min)"),
            (Sync::Always, "sync_interval: always"),
        ],
    };
    for (sync, sync_title) in syncs {
        let matched = match sync {
            Sync::Always => CommitMode::Grouped,
            Sync::Default => CommitMode::OneByOne,
        };
        let modes = match options.commit.as_deref() {
            Some("grouped") => vec![CommitMode::Grouped],
            Some("one-by-one") => vec![CommitMode::OneByOne],
            Some("both") => vec![CommitMode::OneByOne, CommitMode::Grouped],
            _ => vec![matched],
        };
        for mode in modes {
            let title = format!(
                "{sync_title}, commit {}, {}",
                if mode == CommitMode::Grouped { "grouped" } else { "one by one" },
                if options.replicas == 3 {
                    "3 replicas (three nats-servers on this machine)"
                } else {
                    "1 replica"
                }
            );
            eprintln!("{title}…");
            let figures = bench_sync(sync, mode, &options).await?;
            print(&title, &figures);
        }
    }
    Ok(())
}

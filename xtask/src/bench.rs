//! Write-path benchmarks: options, the raw baseline's alternation with each scenario, and the report.

pub(crate) mod check;
mod scenarios;

use scenarios::{
    RawSubjects, bare_store, http_scenario, prepare_deep, provision_scenario, raw, store_scenario, warm_store,
};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self};
use streams::{CommitMode, Settings, Topology, instances::InstanceCommands};
use testkit::Sync;

use crate::measure::{Figure, Servers, apply_patiently, median, sample, stats};

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
    /// the HTTP scenarios' cluster feed (the agent's stream the server sources from the event stream):
    /// `deployed` (`persist_mode: async` on one replica), `fsynced` (the default persist mode, as before
    /// issue 31's fix), or `none` (deleted after registering the cluster). What the feed costs the write
    /// path.
    #[arg(long, default_value = "deployed", value_parser = ["deployed", "fsynced", "none"])]
    cluster_feed: String,
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
        let client = server.connect().await;
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
    let (token, tokens) = crate::api_client::in_process_token()?;
    let state = api::AppState::start(client.clone(), settings).await?.with_tokens(tokens);
    let read_models = state.read_models.clone();
    state.clusters.register(&domain::Cluster { name: "c1".into(), region: "r".into() }).await?;
    reshape_feed(&topology, settings, "c1", &options.cluster_feed).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api::app(state)).await });
    let http = crate::api_client::client(&token)?;
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

/// Replaces `cluster`'s feed as `--cluster-feed` asks: deleted, or made again with the default persist
/// mode (the setting cannot be changed on an existing stream).
async fn reshape_feed(
    topology: &Topology,
    settings: &Settings,
    cluster: &str,
    feed: &str,
) -> anyhow::Result<()> {
    let name = streams::cluster_feed::desired_stream_name(settings, cluster);
    match feed {
        "none" => {
            topology.jetstream.delete_stream(&name).await?;
        }
        "fsynced" => {
            topology.jetstream.delete_stream(&name).await?;
            let mut config = streams::cluster_feed::desired_stream_config(settings, cluster);
            config.persist_mode = None;
            let stream = topology.jetstream.create_stream(config).await?;
            stream.create_consumer(streams::cluster_feed::agent_consumer(cluster)).await?;
        }
        _ => {}
    }
    Ok(())
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

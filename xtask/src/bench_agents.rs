//! Agent benchmark: command acknowledged → all Kubernetes objects applied, over simulated clusters.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cluster_agent::{AgentConfig, Metrics, counting_client};
use domain::{InstanceCommand, ProvisionInstance, ServiceType};
use futures::StreamExt as _;
use k8s_sim::{Simulator, SimulatorOptions};
use projections::{Health, Projection, ReadModel};
use streams::{CommandMetadata, Settings, instances::InstanceCommands};
use testkit::NatsServer;
use uuid::Uuid;

/// Options of the agent benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// instances to provision
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// simulated clusters (one agent each)
    #[arg(long, default_value_t = 10)]
    clusters: usize,
    /// provisions per second
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
}

const SERVICES: [(ServiceType, &str, usize); 4] = [
    // (service, version, objects the agent creates besides the ManagedInstance)
    (ServiceType::Postgresql, "16", 1),
    (ServiceType::Mongodb, "7.0", 4),
    (ServiceType::Influxdb, "2.7", 4),
    (ServiceType::Grafana, "11.6", 4),
];

#[derive(Default)]
struct Progress {
    acked: HashMap<Uuid, Instant>,
    created: HashMap<Uuid, (usize, Option<Instant>)>,
    expected: HashMap<Uuid, usize>,
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let server = NatsServer::start();
    let nats = async_nats::connect(server.url()).await?;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await?;
    let commands = InstanceCommands::new(&topology, 100_000);
    // The API's read model, as one API replica runs it: the whole stream, desired and observed.
    let projection = Projection::spawn(topology.events.clone(), String::new());
    let healthy_at: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let mut sims = Vec::new();
    let mut metrics = Vec::new();
    for c in 0..options.clusters {
        let sim =
            Simulator::new(SimulatorOptions { ready_delay: Duration::ZERO, ..SimulatorOptions::default() });
        let address = sim.serve("127.0.0.1:0".parse()?).await?;
        // Follow the simulator's changes: the moment an instance's last object appears is "applied".
        let mut changes = sim.changes();
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                if change.kind != "ADDED" || change.resource.starts_with("managedinstances") {
                    continue;
                }
                let Some(id) = change.object["metadata"]["labels"]["cp.example.com/instance-id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                let mut p = progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let expected = p.expected.get(&id).copied().unwrap_or(usize::MAX);
                let entry = p.created.entry(id).or_insert((0, None));
                entry.0 += 1;
                if entry.0 == expected {
                    entry.1 = Some(Instant::now());
                }
            }
        });
        let agent_metrics = Metrics::default();
        let client =
            counting_client(kube::Config::new(format!("http://{address}").parse()?), &agent_metrics)?;
        let config = AgentConfig {
            cluster: format!("c{c}"),
            client,
            nats: nats.clone(),
            settings: Settings::default(),
            concurrency: 32,
            resync: Duration::from_secs(300),
            install_crd: true,
            metrics: agent_metrics.clone(),
        };
        tokio::spawn(cluster_agent::run(config));
        sims.push(sim);
        metrics.push(agent_metrics);
    }
    // Let every agent finish its start-up (CRD, lists, watches) before the clock starts.
    for sim in &sims {
        sim.wait_until(Duration::from_secs(30), |s| {
            s.resource_type("cp.example.com", "v1alpha1", "managedinstances").is_some()
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: u64 = sims.iter().map(|s| s.request_counts().values().sum::<u64>()).sum();

    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let mut tick = tokio::time::interval(interval);
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..options.instances {
        tick.tick().await;
        let (service, version, objects) = SERVICES[n % SERVICES.len()];
        let id = Uuid::now_v7();
        progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).expected.insert(id, objects);
        let command = InstanceCommand::Provision(ProvisionInstance::new(
            id,
            "bench",
            format!("db-{n}"),
            service,
            version,
            "starter",
            format!("c{}", n % options.clusters),
        ));
        commands
            .provision_new("bench", id, command, CommandMetadata::new("provision", "bench"))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).acked.insert(id, Instant::now());
        let (projection, healthy_at) = (projection.clone(), healthy_at.clone());
        tokio::spawn(async move {
            let healthy = projection
                .wait_until(Duration::from_secs(60), |m| {
                    m.instance("bench", id).is_some_and(|v| v.status.state == Health::Healthy)
                })
                .await;
            if healthy {
                healthy_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id, Instant::now());
            }
        });
        ids.push(id);
    }
    let offered = started.elapsed();
    // Wait (bounded) for the last instances to be applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let p = progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.iter().all(|id| p.created.get(id).is_some_and(|(_, t)| t.is_some()))
        };
        let healthy = healthy_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() == ids.len();
        if (done && healthy) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(&options, &ids, &progress, &healthy_at, &sims, &metrics, offered, before);
    rebuild(&topology.events, &projection).await
}

#[allow(clippy::too_many_arguments)] // a one-off printer of the benchmark's figures
fn report(
    options: &Options,
    ids: &[Uuid],
    progress: &Mutex<Progress>,
    healthy_at: &Mutex<HashMap<Uuid, Instant>>,
    sims: &[Simulator],
    metrics: &[Metrics],
    offered: Duration,
    before: u64,
) {
    let p = progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let healthy = healthy_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let mut to_healthy: Vec<f64> = ids
        .iter()
        .filter_map(|id| {
            Some(healthy.get(id)?.saturating_duration_since(*p.acked.get(id)?).as_secs_f64() * 1000.0)
        })
        .collect();
    to_healthy.sort_by(f64::total_cmp);
    let mut latencies: Vec<f64> = ids
        .iter()
        .filter_map(|id| {
            let acked = p.acked.get(id)?;
            let applied = p.created.get(id)?.1?;
            Some(applied.saturating_duration_since(*acked).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at =
        |v: &[f64], q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let pct = |q: f64| at(&latencies, q);
    let after: u64 = sims.iter().map(|s| s.request_counts().values().sum::<u64>()).sum();
    let writes: u64 = sims
        .iter()
        .flat_map(|s| s.request_counts())
        .filter(|(k, _)| !k.starts_with("watch ") && !k.starts_with("list ") && !k.starts_with("get "))
        .map(|(_, v)| v)
        .sum();
    let reconcile_writes: u64 = metrics.iter().map(|m| m.mirror_writes.get()).sum();
    println!(
        "agent benchmark: {} instances over {} simulated clusters at {:.0}/s (offered in {:.1}s), simulator ready delay 0",
        options.instances,
        options.clusters,
        options.rate,
        offered.as_secs_f64()
    );
    println!("  applied: {} of {}", latencies.len(), ids.len());
    println!(
        "  command acknowledged -> all objects applied: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  command acknowledged -> status healthy in the API read model: {} of {}; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        to_healthy.len(),
        ids.len(),
        at(&to_healthy, 0.5),
        at(&to_healthy, 0.9),
        at(&to_healthy, 0.99)
    );
    println!(
        "  simulator requests per instance: {:.2} in total after start-up ({:.2} writes incl. start-up; mirror writes {})",
        (after - before) as f64 / ids.len() as f64,
        writes as f64 / ids.len() as f64,
        reconcile_writes
    );
}

/// Replays the whole stream into a fresh read model, checks it equals the live one, and compares the rate
/// with a raw read of the same stream (no decoding) measured right before.
async fn rebuild(stream: &async_nats::jetstream::stream::Stream, live: &Projection) -> anyhow::Result<()> {
    let mut info = stream.clone();
    let last = info.info().await?.state.last_sequence;
    anyhow::ensure!(live.wait_for(last, Duration::from_secs(30)).await, "live read model behind the stream");
    let read = |decode: bool| async move {
        let consumer =
            stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await?;
        let mut messages = consumer.messages().await?;
        let mut model = ReadModel::default();
        let started = Instant::now();
        let mut count = 0u64;
        while count < last {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
            count += 1;
            if decode {
                let sequence = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                let _ = model.apply_message(sequence, message.subject.as_str(), &message.payload);
            }
        }
        anyhow::Ok((count as f64 / started.elapsed().as_secs_f64(), model))
    };
    let (raw_rate, _) = read(false).await?;
    let (rebuild_rate, rebuilt) = read(true).await?;
    let live_model = live.read().clone();
    // Transition times differ by construction (they are when the fold ran); compare everything else.
    let same = rebuilt.last_sequence() == live_model.last_sequence()
        && rebuilt.list("bench", None, usize::MAX, None, None).len()
            == live_model.list("bench", None, usize::MAX, None, None).len()
        && rebuilt
            .list("bench", None, usize::MAX, None, None)
            .iter()
            .zip(live_model.list("bench", None, usize::MAX, None, None))
            .all(|(a, b)| {
                a.instance == b.instance
                    && a.version == b.version
                    && a.observed == b.observed
                    && a.status.state == b.status.state
            });
    println!(
        "  rebuild: {last} messages folded at {rebuild_rate:.0} msg/s vs raw read {raw_rate:.0} msg/s ({:.2} of raw); equal to the live read model: {same}",
        rebuild_rate / raw_rate
    );
    Ok(())
}

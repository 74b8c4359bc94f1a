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
use projections::{Health, Projector, ProjectorMetrics, ReadModels, rebuild};
use streams::{
    CommandMetadata, Settings, cluster_feed, instances::InstanceCommands, read_models::ReadModelBucket,
};
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
    /// before measuring the rebuild, grow the stream to at least this many messages (description changes)
    #[arg(long, default_value_t = 100_000)]
    rebuild_messages: u64,
}

pub(crate) const SERVICES: [(ServiceType, &str, usize); 4] = [
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
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await?;
    let commands = InstanceCommands::new(&topology, 100_000);
    // The projector writes the read models; the API replicas' view of them follows the bucket.
    let bucket = ReadModelBucket::new(&topology);
    let projector_metrics = ProjectorMetrics::default();
    Projector::new(topology.events.clone(), bucket.clone(), projector_metrics.clone()).spawn();
    let projection = ReadModels::start(bucket.clone(), Duration::from_secs(10)).await?;
    // Agents' facts reach the event stream through their clusters' intakes, as `cp-projector run` moves them.
    let registry = streams::clusters::ClusterRegistry::open(&topology).await?;
    tokio::spawn(projections::intake::run(
        topology.jetstream.clone(),
        topology.settings.clone(),
        registry.clone(),
        projections::intake::IntakeLimits::default(),
        projections::intake::IntakeMetrics::default(),
    ));
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
                let Some(id) = change
                    .labels
                    .get("cp.example.com/instance-id")
                    .and_then(serde_json::Value::as_str)
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
        let cluster = format!("c{c}");
        registry.register(&domain::Cluster { name: cluster.clone(), region: "bench".into() }).await?;
        // Each agent with its own identity and nothing more, as deployed.
        let identity = server
            .add_agent_account(&streams::accounts::agent_account(&topology.settings, &cluster).to_value());
        let agent_nats = identity
            .connect_options()
            .custom_inbox_prefix(cluster_feed::agent_inbox_prefix(&cluster))
            .connect(server.address())
            .await?;
        let config = AgentConfig {
            cluster,
            client,
            nats: agent_nats,
            settings: Settings::default(),
            concurrency: 32,
            resync: Duration::from_secs(300),
            install_crd: true,
            metrics: agent_metrics.clone(),
            backup_store: None,
            heartbeat: Duration::from_secs(10),
            election: None,
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
            .provision_new(
                "bench",
                id,
                command,
                CommandMetadata::new(domain::OperationKind::Provision, "bench"),
            )
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
    grow_stream(&commands, &topology.events, &ids, options.rebuild_messages).await?;
    // Let the agents finish the grown stream (and the observations they publish) before reading it again:
    // otherwise the rebuild and its raw baseline compete with them, unevenly.
    let mut last = 0;
    for _ in 0..600 {
        let mut pending = 0;
        for c in 0..options.clusters {
            let cluster = format!("c{c}");
            let feed = topology
                .jetstream
                .get_stream(cluster_feed::desired_stream_name(&topology.settings, &cluster));
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = feed
                .await?
                .get_consumer(&cluster_feed::agent_consumer_name(&cluster))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = consumer.info().await?;
            pending += info.num_pending + info.num_ack_pending as u64;
        }
        let now = topology.events.clone().info().await?.state.last_sequence;
        if pending == 0 && now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(
        projection.wait_for(last, Duration::from_secs(120)).await,
        "read models behind the stream"
    );
    println!(
        "  projector: {} messages applied, {} records written in {} flushes ({:.2} writes per message)",
        projector_metrics.applied.get(),
        projector_metrics.records_written.get(),
        projector_metrics.flushes.get(),
        projector_metrics.records_written.get() as f64 / projector_metrics.applied.get().max(1) as f64
    );
    rebuild_rate(&topology.events, &bucket).await
}

/// Appends description changes, spread over the instances, until the stream holds `target` messages.
async fn grow_stream(
    commands: &InstanceCommands,
    events: &async_nats::jetstream::stream::Stream,
    ids: &[Uuid],
    target: u64,
) -> anyhow::Result<()> {
    let mut info = events.clone();
    let have = info.info().await?.state.messages;
    let missing = usize::try_from(target.saturating_sub(have))?;
    let started = Instant::now();
    futures::stream::iter(0..missing)
        .map(|n| {
            let id = ids[n % ids.len()];
            let command = InstanceCommand::Update(domain::instance::UpdateInstance {
                description: Some(format!("change {n}")),
                ..Default::default()
            });
            commands.execute(
                "bench",
                id,
                command,
                None,
                CommandMetadata::new(domain::OperationKind::Update, "bench"),
            )
        })
        .buffer_unordered(64)
        .map(|r| r.map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    if missing > 0 {
        println!(
            "  grew the stream by {missing} description changes in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
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

/// Folds the whole stream into fresh read models, checks them against the live ones, and compares the
/// rate with a raw read of the same stream (no decoding) measured right before.
pub(crate) async fn rebuild_rate(
    events: &async_nats::jetstream::stream::Stream,
    bucket: &ReadModelBucket,
) -> anyhow::Result<()> {
    let mut raw_rates = Vec::new();
    let mut fold_rates = Vec::new();
    let mut verification = None;
    for _ in 0..3 {
        let last = events.clone().info().await?.state.last_sequence;
        raw_rates.push(rebuild::fold_stream(events, last, false).await?.rate());
        let verified = rebuild::verify(events, bucket).await?;
        fold_rates.push(verified.rebuilt.rate());
        verification = Some(verified);
    }
    let verification = verification.expect("three runs");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, fold) = (median(&mut raw_rates), median(&mut fold_rates));
    println!(
        "  rebuild (median of 3): {} messages folded at {fold:.0} msg/s vs raw read {raw:.0} msg/s ({:.2} of raw); equal to the live read models: {}",
        verification.rebuilt.messages,
        fold / raw,
        if verification.differences.is_empty() {
            "yes".to_owned()
        } else {
            format!("NO ({})", verification.differences.join(", "))
        }
    );
    Ok(())
}

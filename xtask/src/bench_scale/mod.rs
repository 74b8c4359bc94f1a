//! The scale benchmark (`xtask bench-scale`): a hundred simulated clusters, each with its agent, and a
//! hundred thousand instances provisioned through the HTTP API, every part a release binary in its own
//! process (see `stack`). Prints throughput over time, command acknowledged → healthy, consumer lag,
//! memory per instance of each part, Kubernetes requests per instance, read-model writes per event, disk,
//! restarts in steady state, reads at scale from a client process of its own, and a full rebuild beside a
//! raw read of the same stream; draws throughput, lag and memory over time as SVG charts.

mod monitor;
mod plot;
mod provision;
pub(crate) mod reads;
mod restarts;
mod stack;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use streams::read_models::ReadModelBucket;

use crate::{
    measure::{cpu_seconds, percentile},
    process::{disk_bytes, quiet},
};

/// Options of the scale benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// simulated clusters, one agent each
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// instances to provision
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// projects the instances are spread over
    #[arg(long, default_value_t = 10)]
    projects: usize,
    /// concurrent HTTP clients provisioning
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// provisions per second offered; absent: as fast as the clients are answered
    #[arg(long)]
    rate: Option<f64>,
    /// seconds between samples of progress, lag and memory
    #[arg(long, default_value_t = 2.0)]
    sample_seconds: f64,
    /// give up when not all instances are healthy this many minutes after the first request
    #[arg(long, default_value_t = 40)]
    patience_minutes: u64,
    /// read load: requests per second, and seconds per scenario
    #[arg(long, default_value_t = 500.0)]
    read_rate: f64,
    #[arg(long, default_value_t = 20)]
    read_seconds: u64,
    /// where the release binaries are
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// where the charts go
    #[arg(long, default_value = "docs/benchmarks")]
    charts: PathBuf,
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let run_started = Instant::now();
    let mut stack = stack::Stack::start(&options.bin_dir, options.clusters).await?;
    let http = reqwest::Client::new();
    quiet(&http, &stack.agent_metrics()).await?;
    println!(
        "scale benchmark: {} instances over {} simulated clusters (one k8s-sim process, zero ready delay), {} agents, projector and one API replica as release processes; nats-server sync_interval: always",
        options.instances, options.clusters, options.clusters
    );
    println!("  stack started in {:.1} s", run_started.elapsed().as_secs_f64());
    let idle = Memory::of(&stack)?;
    let idle_kube = kube_requests(&http, &stack).await?;

    let tracker = Arc::new(provision::Tracker::default());
    let watcher =
        tokio::spawn(provision::watch_healthy(ReadModelBucket::new(&stack.topology), tracker.clone()));
    let load = provision::Load {
        api: stack.api.url.clone(),
        token: stack.token.clone(),
        instances: options.instances,
        clients: options.clients,
        rate: options.rate,
        projects: options.projects,
        clusters: options.clusters,
    };
    let cpu_before = Cpu::of(&stack)?;
    let started = Instant::now();
    let mut provisioning = tokio::spawn(provision::provision(load, tracker.clone()));
    let mut samples = Vec::new();
    let mut all_accepted = None;
    let interval = Duration::from_secs_f64(options.sample_seconds);
    loop {
        samples.push(monitor::sample(&stack, &http, &tracker, started).await?);
        if all_accepted.is_none() && provisioning.is_finished() {
            (&mut provisioning).await??;
            all_accepted = Some(started.elapsed());
        }
        if tracker.healthy.load(Ordering::Relaxed) >= options.instances as u64 {
            break;
        }
        if samples.len() % 15 == 0
            && let Some(s) = samples.last()
        {
            eprintln!(
                "  [{:.0} s] {} accepted, {} healthy; agents {:.0} MiB, k8s-sim {:.0} MiB",
                s.seconds,
                s.accepted,
                s.healthy,
                s.agents_mib,
                stack.simulators_rss_kib() as f64 / 1024.0
            );
        }
        // Rather stop than have the kernel kill a part at random.
        let available = crate::process::available_kib();
        anyhow::ensure!(
            available > 1024 * 1024,
            "the machine is running out of memory ({} MiB available): agents {:.0} MiB, k8s-sim {:.0} MiB, nats-server {:.0} MiB",
            available / 1024,
            samples.last().map_or(0.0, |s| s.agents_mib),
            stack.simulators_rss_kib() as f64 / 1024.0,
            samples.last().map_or(0.0, |s| s.nats_mib)
        );
        anyhow::ensure!(!watcher.is_finished(), "the read-model watch ended");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(options.patience_minutes * 60),
            "after {} minutes, {} of {} instances are healthy",
            options.patience_minutes,
            tracker.healthy.load(Ordering::Relaxed),
            options.instances
        );
        tokio::time::sleep(interval).await;
    }
    let all_healthy = tracker.last_healthy().map_or(started.elapsed(), |t| t - started);
    let all_accepted = all_accepted.unwrap_or(all_healthy);
    let cpu_after = Cpu::of(&stack)?;
    samples.push(monitor::sample(&stack, &http, &tracker, started).await?);

    println!("\n  over time (sampled every {:.0} s):", options.sample_seconds);
    monitor::print_table(&samples);
    monitor::draw(&samples, &options.charts)?;
    println!("  charts: {}/scale-{{throughput,lag,memory}}.svg", options.charts.display());

    let n = options.instances as f64;
    let requests = tracker.request_latencies();
    let to_healthy = tracker.to_healthy_ms();
    let at = |q: f64| to_healthy.get(((to_healthy.len() as f64 - 1.0) * q).round() as usize).copied();
    println!(
        "\n  provisioning ({} HTTP clients, {}):",
        options.clients,
        match options.rate {
            Some(rate) => format!("{rate:.0}/s offered"),
            None => "as fast as answered".to_owned(),
        }
    );
    println!(
        "    all {} accepted after {:.1} s ({:.0}/s; request -> 202 p50 {:.1} ms, p99 {:.1} ms; {} answered 429/503 and retried)",
        options.instances,
        all_accepted.as_secs_f64(),
        n / all_accepted.as_secs_f64(),
        percentile(&requests, 0.5),
        percentile(&requests, 0.99),
        tracker.refused.load(Ordering::Relaxed)
    );
    println!(
        "    all healthy after {:.1} s ({:.0}/s); acknowledged -> healthy p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        all_healthy.as_secs_f64(),
        n / all_healthy.as_secs_f64(),
        at(0.5).unwrap_or(f64::NAN),
        at(0.9).unwrap_or(f64::NAN),
        at(0.99).unwrap_or(f64::NAN),
        at(1.0).unwrap_or(f64::NAN)
    );
    cpu_after.print_since(&cpu_before, n, all_healthy);

    quiet(&http, &stack.agent_metrics()).await?;
    let loaded = Memory::of(&stack)?;
    let per_instance = |loaded: u64, idle: u64| loaded.saturating_sub(idle) as f64 / n;
    println!(
        "    resident memory per instance: agents {:.1} KiB (all {} together: {} -> {} MiB), projector {:.1} KiB ({} -> {} MiB), API replica {:.1} KiB ({} -> {} MiB)",
        per_instance(loaded.agents, idle.agents),
        options.clusters,
        idle.agents / 1024,
        loaded.agents / 1024,
        per_instance(loaded.projector, idle.projector),
        idle.projector / 1024,
        loaded.projector / 1024,
        per_instance(loaded.api, idle.api),
        idle.api / 1024,
        loaded.api / 1024
    );
    let loaded_kube = kube_requests(&http, &stack).await?;
    let (kube_requests, kube_writes) = (loaded_kube.0 - idle_kube.0, loaded_kube.1 - idle_kube.1);
    println!(
        "    Kubernetes API requests per instance: {:.2} ({:.2} writes)",
        kube_requests as f64 / n,
        kube_writes as f64 / n
    );
    let projector = http.get(stack.projector.metrics()).send().await?.text().await?;
    let applied = crate::process::sample(&projector, "cp_projector_applied_messages_total");
    let written = crate::process::sample(&projector, "cp_projector_records_written_total");
    println!(
        "    read-model (KV) writes: {:.0} for {:.0} stream messages folded: {:.2} per message, {:.2} per instance",
        written,
        applied,
        written / applied.max(1.0),
        written / n
    );
    let disk = disk_bytes(&stack.server.store_dir());
    let events = stack.topology.events.clone().info().await?.state.clone();
    println!(
        "    disk: {:.0} MiB in the JetStream store ({:.0} MiB per 100,000 instances); the event stream {} messages, {:.0} MiB",
        disk as f64 / 1048576.0,
        disk as f64 / 1048576.0 * 100_000.0 / n,
        events.messages,
        events.bytes as f64 / 1048576.0
    );

    let ids_file = tempfile::NamedTempFile::new()?;
    provision::write_ids(&tracker, options.projects, ids_file.path())?;
    let first = std::fs::read_to_string(ids_file.path())?.lines().next().unwrap_or_default().to_owned();
    let changed = first.split_once('/').ok_or_else(|| anyhow::anyhow!("no instance"))?;
    println!("\n  restarts in steady state:");
    let restarts =
        restarts::measure(&mut stack, &http, options.instances.div_ceil(options.clusters), changed).await?;
    restarts.print();

    println!(
        "\n  reads at {} instances, {:.0} requests/s for {} s each, from a client process of its own (project of {} instances):",
        options.instances,
        options.read_rate,
        options.read_seconds,
        options.instances / options.projects
    );
    let reads = reads::measure(
        &stack.api.url,
        &stack.token,
        ids_file.path(),
        options.read_rate,
        options.read_seconds,
    )
    .await?;
    for r in &reads {
        println!(
            "    {:<40} {:>6} requests ({} failed), {:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            r.scenario, r.requests, r.failed, r.achieved_per_s, r.p50_ms, r.p99_ms, r.max_ms
        );
    }

    println!();
    crate::bench_agents::rebuild_rate(&stack.topology.events, &ReadModelBucket::new(&stack.topology)).await?;
    watcher.abort();
    println!("  whole run {:.0} s", run_started.elapsed().as_secs_f64());
    Ok(())
}

/// Resident memory of the parts, KiB.
struct Memory {
    agents: u64,
    projector: u64,
    api: u64,
}

impl Memory {
    fn of(stack: &stack::Stack) -> anyhow::Result<Self> {
        Ok(Self {
            agents: stack.agents_rss_kib()?,
            projector: stack.projector.rss_kib()?,
            api: stack.api.rss_kib()?,
        })
    }
}

/// CPU seconds used so far by each part: where the two cores went.
#[derive(Clone, Copy)]
struct Cpu([f64; 6]);

const PARTS: [&str; 6] = ["agents", "k8s-sim", "nats-server", "API", "projector", "load generator"];

impl Cpu {
    fn of(stack: &stack::Stack) -> anyhow::Result<Self> {
        let agents = stack
            .agents
            .iter()
            .map(|a| a.service.pid().map(|p| cpu_seconds(Some(p))))
            .sum::<anyhow::Result<f64>>()?;
        Ok(Self([
            agents,
            cpu_seconds(stack.simulators_pid()),
            cpu_seconds(stack.nats_pid()),
            cpu_seconds(Some(stack.api.pid()?)),
            cpu_seconds(Some(stack.projector.pid()?)),
            cpu_seconds(None),
        ]))
    }

    /// Each part's CPU time since `before`, per instance, in microseconds.
    fn print_since(&self, before: &Self, instances: f64, wall: Duration) {
        let used: Vec<f64> = self.0.iter().zip(before.0).map(|(now, then)| now - then).collect();
        let total: f64 = used.iter().sum();
        let parts: Vec<String> = PARTS
            .iter()
            .zip(&used)
            .map(|(part, seconds)| format!("{part} {:.0} µs", seconds * 1e6 / instances))
            .collect();
        println!(
            "    CPU per instance: {} (in all {:.0} µs; {:.2} of the two cores busy over {:.0} s)",
            parts.join(", "),
            total * 1e6 / instances,
            total / wall.as_secs_f64() / 2.0,
            wall.as_secs_f64()
        );
    }
}

/// Kubernetes requests and writes so far, summed over every agent (one scrape of each).
async fn kube_requests(http: &reqwest::Client, stack: &stack::Stack) -> anyhow::Result<(u64, u64)> {
    let (mut requests, mut writes) = (0, 0);
    for metrics in stack.agent_metrics() {
        let text = http.get(&metrics).send().await?.text().await?;
        requests += crate::process::sample(&text, "cp_agent_kube_requests_total") as u64;
        writes += crate::process::sample(&text, "cp_agent_kube_writes_total") as u64;
    }
    Ok((requests, writes))
}

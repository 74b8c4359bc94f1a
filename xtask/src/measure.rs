//! What every benchmark measures with: timed runs from many tasks, CPU time of this process and of the
//! nats-servers, medians and percentiles, and the servers themselves.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::future::join_all;
use streams::{Settings, Topology};
use testkit::{NatsCluster, NatsServer, Sync};

/// Medians over the runs of one scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) rate: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    /// CPU time per command of this process (client, and the API when it is served in-process)
    pub(crate) client_us: f64,
    /// CPU time per command of the nats-server
    pub(crate) server_us: f64,
}

pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) in_flight: usize,
    pub(crate) stats: Stats,
    /// the raw baseline measured in alternation with this scenario, and the median of the per-pair ratios
    pub(crate) baseline: Stats,
    pub(crate) ratio: f64,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs `op(worker, n)` from `workers` tasks for `duration`; returns ops/s and sorted latencies.
pub(crate) async fn drive<F, Fut>(
    workers: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<(f64, Vec<Duration>)>
where
    F: Fn(usize, u64) -> Fut + Send + std::marker::Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = (0..workers).map(|worker| {
        let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                op(worker, n).await?;
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(latencies)
        })
    });
    let tasks: Vec<_> = tasks.collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in join_all(tasks).await {
        latencies.extend(task??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed, latencies))
}

/// The nats-server(s) a benchmark runs against: one server, or a three-node cluster for three replicas.
pub(crate) enum Servers {
    One(NatsServer),
    Three(NatsCluster),
}

impl Servers {
    pub(crate) fn start(sync: Sync, replicas: usize) -> Self {
        match replicas {
            3 => Self::Three(NatsCluster::start_with(sync)),
            _ => Self::One(NatsServer::start_with(sync)),
        }
    }

    /// A connection as the control plane.
    pub(crate) async fn connect(&self) -> async_nats::Client {
        match self {
            Self::One(server) => server.connect().await,
            Self::Three(cluster) => cluster.connect().await,
        }
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        match self {
            Self::One(server) => server.pid().into_iter().collect(),
            Self::Three(cluster) => cluster.pids(),
        }
    }
}

/// CPU time of the nats-server processes so far.
pub(crate) fn servers_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(Some(*pid))).sum()
}

/// CPU time (user + system) of a process so far, from `/proc` (Linux, 100 clock ticks per second).
pub(crate) fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else { return f64::NAN };
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime the 14th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// One timed run and the CPU it cost.
pub(crate) struct Sample {
    pub(crate) rate: f64,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) client_us: f64,
    pub(crate) server_us: f64,
}

pub(crate) async fn sample<Fut>(server_pids: &[u32], run: Fut) -> anyhow::Result<Sample>
where
    Fut: std::future::Future<Output = anyhow::Result<(f64, Vec<Duration>)>>,
{
    let (client, server) = (cpu_seconds(None), servers_cpu_seconds(server_pids));
    let (rate, latencies) = run.await?;
    let per_command = |seconds: f64| seconds * 1e6 / latencies.len().max(1) as f64;
    Ok(Sample {
        rate,
        client_us: per_command(cpu_seconds(None) - client),
        server_us: per_command(servers_cpu_seconds(server_pids) - server),
        latencies,
    })
}

pub(crate) fn stats(samples: &[Sample]) -> Stats {
    let of = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Stats {
        rate: of(|s| s.rate),
        p50: of(|s| percentile(&s.latencies, 0.50)),
        p99: of(|s| percentile(&s.latencies, 0.99)),
        client_us: of(|s| s.client_us),
        server_us: of(|s| s.server_us),
    }
}

/// Applies the topology; a fresh cluster may time out the first requests while its meta layer settles.
pub(crate) async fn apply_patiently(
    settings: &Settings,
    jetstream: &jetstream::Context,
) -> anyhow::Result<Topology> {
    let started = Instant::now();
    loop {
        match settings.apply(jetstream).await {
            Ok(topology) => return Ok(topology),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("  ({e}; retrying)");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

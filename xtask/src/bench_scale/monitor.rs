//! What the run looks like over time: progress, consumer lag and memory, sampled at an interval, then
//! printed as a table and drawn as charts.

use std::{path::Path, sync::atomic::Ordering, time::Instant};

use super::{
    plot::{Series, line_chart},
    provision::Tracker,
    stack::Stack,
};
use crate::process::{rss_kib, sample as metric_sample};

/// One sample of the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    /// since the first request
    pub(super) seconds: f64,
    pub(super) accepted: u64,
    pub(super) healthy: u64,
    /// stream messages not yet covered by the projector's checkpoint
    pub(super) projector_lag: u64,
    /// messages the agents' consumers have yet to deliver or have acknowledged: the largest and the median
    pub(super) agent_lag_max: u64,
    pub(super) agent_lag_median: u64,
    /// resident memory, MiB
    pub(super) agents_mib: f64,
    pub(super) projector_mib: f64,
    pub(super) api_mib: f64,
    pub(super) nats_mib: f64,
}

pub(super) async fn sample(
    stack: &Stack,
    http: &reqwest::Client,
    tracker: &Tracker,
    started: Instant,
) -> anyhow::Result<Sample> {
    let last = stack.topology.events.clone().info().await?.state.last_sequence;
    let projector = http.get(stack.projector.metrics()).send().await?.text().await?;
    let checkpoint = metric_sample(&projector, "cp_projector_checkpoint_sequence") as u64;
    let mut lags = stack.agent_lags().await?;
    lags.sort_unstable();
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Sample {
        seconds: started.elapsed().as_secs_f64(),
        accepted: tracker.accepted.load(Ordering::Relaxed),
        healthy: tracker.healthy.load(Ordering::Relaxed),
        projector_lag: last.saturating_sub(checkpoint),
        agent_lag_max: lags.last().copied().unwrap_or(0),
        agent_lag_median: lags.get(lags.len() / 2).copied().unwrap_or(0),
        agents_mib: mib(stack.agents_rss_kib()?),
        projector_mib: mib(stack.projector.rss_kib()?),
        api_mib: mib(stack.api.rss_kib()?),
        nats_mib: stack.nats_pid().and_then(|pid| rss_kib(pid).ok()).map_or(f64::NAN, mib),
    })
}

/// Per-second rate between consecutive samples.
fn rates(samples: &[Sample], count: impl Fn(&Sample) -> u64) -> Vec<f64> {
    let mut rates = vec![0.0];
    for pair in samples.windows(2) {
        let seconds = (pair[1].seconds - pair[0].seconds).max(1e-3);
        rates.push(count(&pair[1]).saturating_sub(count(&pair[0])) as f64 / seconds);
    }
    rates
}

/// Prints about twenty rows of the samples.
pub(super) fn print_table(samples: &[Sample]) {
    let accepted = rates(samples, |s| s.accepted);
    let healthy = rates(samples, |s| s.healthy);
    println!(
        "  {:>6} {:>9} {:>9} {:>10} {:>9} {:>11} {:>11} {:>10} {:>10} {:>8}",
        "s",
        "accepted",
        "healthy",
        "accepted/s",
        "healthy/s",
        "proj. lag",
        "agent lag",
        "agents MiB",
        "proj. MiB",
        "API MiB"
    );
    let step = samples.len().div_ceil(20).max(1);
    for (n, s) in samples.iter().enumerate() {
        if n % step != 0 && n + 1 != samples.len() {
            continue;
        }
        println!(
            "  {:>6.0} {:>9} {:>9} {:>10.0} {:>9.0} {:>11} {:>5}/{:>5} {:>10.0} {:>10.0} {:>8.0}",
            s.seconds,
            s.accepted,
            s.healthy,
            accepted[n],
            healthy[n],
            s.projector_lag,
            s.agent_lag_median,
            s.agent_lag_max,
            s.agents_mib,
            s.projector_mib,
            s.api_mib
        );
    }
    println!("  (agent lag: median/largest over the agents)");
}

/// Throughput, lag and memory over time, as three SVG charts in `dir`.
pub(super) fn draw(samples: &[Sample], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let seconds: Vec<f64> = samples.iter().map(|s| s.seconds).collect();
    let column = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    line_chart(
        &dir.join("scale-throughput.svg"),
        "Provisioning through the API: accepted and healthy per second",
        "instances per second",
        &seconds,
        &[
            Series { label: "accepted (202)", values: rates(samples, |s| s.accepted) },
            Series { label: "healthy in the read models", values: rates(samples, |s| s.healthy) },
        ],
    )?;
    line_chart(
        &dir.join("scale-lag.svg"),
        "Consumer lag",
        "messages behind",
        &seconds,
        &[
            Series { label: "projector", values: column(|s| s.projector_lag as f64) },
            Series { label: "agents: largest", values: column(|s| s.agent_lag_max as f64) },
            Series { label: "agents: median", values: column(|s| s.agent_lag_median as f64) },
        ],
    )?;
    line_chart(
        &dir.join("scale-memory.svg"),
        "Resident memory",
        "MiB",
        &seconds,
        &[
            Series { label: "all agents together", values: column(|s| s.agents_mib) },
            Series { label: "projector", values: column(|s| s.projector_mib) },
            Series { label: "API replica", values: column(|s| s.api_mib) },
            Series { label: "nats-server", values: column(|s| s.nats_mib) },
        ],
    )?;
    Ok(())
}

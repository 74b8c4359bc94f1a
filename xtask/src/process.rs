//! The benchmarks' view of processes of their own: resident memory, Prometheus metrics, free ports.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Resident memory of a process, in KiB (`VmRSS` of /proc/<pid>/status).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// Memory the machine has available for new allocations, in KiB (`MemAvailable` of /proc/meminfo).
pub(crate) fn available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemAvailable:")?.trim().strip_suffix(" kB")?.trim().parse().ok()
            })
        })
        .unwrap_or(u64::MAX)
}

/// The value of a sample in an OpenMetrics text (`name value`), 0 when absent.
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A counter of a process's /metrics (`<name>_total`).
pub(crate) async fn counter(http: &reqwest::Client, metrics: &str, name: &str) -> anyhow::Result<u64> {
    let text = http.get(metrics).send().await?.text().await?;
    Ok(sample(&text, &format!("{name}_total")) as u64)
}

/// Waits until the agents behind `metrics` have made no Kubernetes request for a second (their watches
/// open, their work done), so a memory sample or a count of writes is taken at rest.
pub(crate) async fn quiet(http: &reqwest::Client, metrics: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let mut requests = 0;
        for url in metrics {
            requests += counter(http, url, "cp_agent_kube_requests").await?;
        }
        if requests != last {
            (last, since) = (requests, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the agents did not come to rest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nobody listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `url` answers at all (a process has begun serving).
pub(crate) async fn serving(http: &reqwest::Client, url: &str, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while http.get(url).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "{what} did not serve {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The simulators' addresses, once `k8s-sim --address-file` has written them.
pub(crate) async fn simulator_addresses(file: &Path) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.is_empty() {
            return Ok(text.lines().map(str::to_owned).collect());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the simulator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bytes under a directory (what a store holds on disk).
pub(crate) fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

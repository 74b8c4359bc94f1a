//! The load: provisions through the HTTP API from many clients, and when each instance became healthy
//! as the API's read models show it (a watch of the read-model bucket, which is what every API replica
//! follows).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use projections::Health;
use serde::Deserialize;
use streams::read_models::{ReadModelBucket, RecordKey};
use uuid::Uuid;

use crate::bench_agents::SERVICES;

/// When each instance was acknowledged and when it was first healthy.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) accepted: AtomicU64,
    pub(super) healthy: AtomicU64,
    /// requests answered other than 202, retried
    pub(super) refused: AtomicU64,
    times: Mutex<Times>,
}

#[derive(Default)]
struct Times {
    /// when, and which provision it was (`n`)
    acked: HashMap<Uuid, (Instant, usize)>,
    healthy: HashMap<Uuid, Instant>,
    /// request → 202, per provision
    latencies: Vec<Duration>,
}

impl Tracker {
    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Command acknowledged → healthy in the read models, in milliseconds, sorted.
    pub(super) fn to_healthy_ms(&self) -> Vec<f64> {
        let times = self.times();
        let mut ms: Vec<f64> = times
            .acked
            .iter()
            .filter_map(|(id, (acked, _))| {
                Some(times.healthy.get(id)?.saturating_duration_since(*acked).as_secs_f64() * 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    }

    /// Request → 202, sorted.
    pub(super) fn request_latencies(&self) -> Vec<Duration> {
        let mut latencies = self.times().latencies.clone();
        latencies.sort_unstable();
        latencies
    }

    /// The moment the last instance became healthy.
    pub(super) fn last_healthy(&self) -> Option<Instant> {
        self.times().healthy.values().max().copied()
    }
}

/// Only what the benchmark reads of an instance record.
#[derive(Deserialize)]
struct InstanceRecord {
    status: RecordStatus,
}

#[derive(Deserialize)]
struct RecordStatus {
    state: Health,
}

/// Follows the read-model bucket and records the first moment each instance's record says healthy.
pub(super) async fn watch_healthy(bucket: ReadModelBucket, tracker: Arc<Tracker>) -> anyhow::Result<()> {
    let mut watch = bucket.watch(0).await?;
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let Some(RecordKey::Instance { id, .. }) = RecordKey::parse(&entry.key) else { continue };
        let Ok(record) = serde_json::from_slice::<InstanceRecord>(&entry.value) else { continue };
        if record.status.state == Health::Healthy {
            let first = tracker.times().healthy.insert(id, Instant::now()).is_none();
            if first {
                tracker.healthy.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// What to provision.
#[derive(Debug, Clone)]
pub(super) struct Load {
    pub(super) api: String,
    pub(super) token: String,
    pub(super) instances: usize,
    pub(super) clients: usize,
    /// provisions per second offered, or as fast as the clients go
    pub(super) rate: Option<f64>,
    pub(super) projects: usize,
    pub(super) clusters: usize,
}

pub(super) fn project_of(n: usize, projects: usize) -> String {
    format!("p{}", n % projects)
}

/// Provisions `load.instances` through the API; instance `n` goes to cluster `n % clusters` and project
/// `n % projects`, services in turn. 429 and 503 are retried after a pause (they are the API shedding
/// load, which a client must expect); anything else but 202 ends the run.
pub(super) async fn provision(load: Load, tracker: Arc<Tracker>) -> anyhow::Result<()> {
    let http = crate::api_client::client(&load.token)?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..load.clients).map(|_| {
        let (http, next, tracker, load) = (http.clone(), next.clone(), tracker.clone(), load.clone());
        tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= load.instances {
                    return anyhow::Ok(());
                }
                if let Some(rate) = load.rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into())
                        .await;
                }
                let (service, version, _) = SERVICES[n % SERVICES.len()];
                let body = serde_json::json!({
                    "name": format!("db-{n}"),
                    "service": service,
                    "version": version,
                    "plan": "starter",
                    "cluster": super::stack::cluster_name(n % load.clusters),
                });
                let url = format!("{}/v1/projects/{}/instances", load.api, project_of(n, load.projects));
                loop {
                    let sent = Instant::now();
                    let response = http.post(&url).json(&body).send().await?;
                    let status = response.status();
                    if status == reqwest::StatusCode::ACCEPTED {
                        let operation: serde_json::Value = response.json().await?;
                        let id: Uuid = operation["instance_id"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| anyhow::anyhow!("202 without an instance id: {operation}"))?;
                        let now = Instant::now();
                        let mut times = tracker.times();
                        times.acked.insert(id, (now, n));
                        times.latencies.push(now - sent);
                        drop(times);
                        tracker.accepted.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    {
                        tracker.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    anyhow::bail!("provision {n}: {status}: {}", response.text().await.unwrap_or_default());
                }
            }
        })
    });
    for client in futures::future::join_all(clients.collect::<Vec<_>>()).await {
        client??;
    }
    Ok(())
}

/// Every acknowledged instance, as `project/id` lines (the read load's input).
pub(super) fn write_ids(tracker: &Tracker, projects: usize, path: &std::path::Path) -> anyhow::Result<()> {
    let times = tracker.times();
    let lines: Vec<String> =
        times.acked.iter().map(|(id, (_, n))| format!("{}/{id}", project_of(*n, projects))).collect();
    std::fs::write(path, lines.join("\n"))?;
    Ok(())
}

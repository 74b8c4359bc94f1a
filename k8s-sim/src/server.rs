//! The HTTP face of the simulator: its state, faults and routes (`server/discovery.rs`: API discovery;
//! `server/resources.rs`: the resource endpoints).

mod discovery;
mod resources;

use discovery::groups;
use resources::resource;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::store::{Change, Store};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// how long simulated controllers take to make workloads ready
    pub ready_delay: Duration,
    /// interval of watch bookmarks
    pub bookmark_interval: Duration,
    /// past changes a watch can resume from (older resourceVersions get 410 Gone)
    pub history: usize,
    /// changes on their way to watchers; a watcher that falls further behind gets 410 Gone. Each change
    /// held here or in `history` keeps its object alive: at a hundred clusters the defaults held gigabytes.
    pub change_buffer: usize,
    /// addresses a stand-in cloud load-balancer controller gives Services of type `LoadBalancer`
    /// ([`crate::load_balancer`]); none when `None`
    pub load_balancer_pool: Option<ipnet::Ipv4Net>,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            ready_delay: Duration::from_millis(200),
            bookmark_interval: Duration::from_secs(1),
            history: crate::store::HISTORY,
            change_buffer: 65_536,
            load_balancer_pool: None,
        }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// workloads whose name matches (`*` for all) fail to pull their image
    #[serde(default)]
    pub image_pull_failure: Vec<String>,
    /// workloads whose name matches (`*` for all) crash in a loop
    #[serde(default)]
    pub crash_loop: Vec<String>,
    /// every n-th API request (not watches) fails with `fail_with`; 0 = never
    #[serde(default)]
    pub fail_every_nth_request: u64,
    /// the status of those failures: 500 (the default), 409 (a write lost a race: the apiserver's
    /// optimistic-concurrency conflict) or 429 (API Priority and Fairness rejected it, with `Retry-After`)
    #[serde(default)]
    pub fail_with: Option<u16>,
    /// every n-th watch of each resource is answered 410 Gone (its resourceVersion is too old, as after
    /// etcd compaction), so the client must list again; 0 = never. Counted per resource: one count across
    /// resources would, with an even number of watchers taking turns, answer the same watchers Gone every
    /// time
    #[serde(default)]
    pub watch_gone_every_nth: u64,
    /// the API server is down: every request, watches included, is answered 503
    #[serde(default)]
    pub down: bool,
    /// extra latency of every API request (not watches), in milliseconds
    #[serde(default)]
    pub latency_ms: u64,
    /// how late each watch delivers each change, in milliseconds (a watch cache lagging behind the writes
    /// a client just made, as a busy API server's does)
    #[serde(default)]
    pub watch_delay_ms: u64,
    /// the storage class cannot expand volumes: growing a claim's request is refused with 403
    #[serde(default)]
    pub volume_expansion_refused: bool,
    /// Jobs whose name matches (`*` for all) fail (their pods exit non-zero until the backoff limit)
    #[serde(default)]
    pub failing_jobs: Vec<String>,
    /// CloudNativePG `Cluster`s whose name matches (`*` for all) are not processed yet: their status, pods
    /// and running parameters stay as they were, as while the operator has not reconciled a change
    #[serde(default)]
    pub cnpg_held: Vec<String>,
}

impl Faults {
    /// The failure reason for a workload, if one is injected.
    /// Whether the Job (or CloudNativePG Backup) `name` is to fail.
    pub fn job_fails(&self, name: &str) -> bool {
        self.failing_jobs.iter().any(|p| p == "*" || p == name)
    }

    /// Whether CloudNativePG holds off processing the `Cluster` `name`.
    pub fn cnpg_holds(&self, name: &str) -> bool {
        self.cnpg_held.iter().any(|p| p == "*" || p == name)
    }

    /// Why the workload `name` does not run, if a fault says it does not.
    pub fn workload_failure(&self, name: &str) -> Option<&'static str> {
        let hit = |list: &[String]| list.iter().any(|p| p == "*" || p == name);
        if hit(&self.image_pull_failure) {
            Some("ImagePullBackOff")
        } else if hit(&self.crash_loop) {
            Some("CrashLoopBackOff")
        } else {
            None
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Mutex<Store>,
    pub(crate) changes: broadcast::Sender<Change>,
    counts: Mutex<BTreeMap<String, u64>>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) options: SimulatorOptions,
    /// the generation each workload was last settled at, by (resource, namespace, name)
    pub(crate) settled: Mutex<std::collections::HashMap<(String, String, String), i64>>,
    /// StatefulSets whose `restore` init container fails, by (namespace, name)
    pub(crate) init_failures: Mutex<std::collections::HashSet<(String, String)>>,
    /// the parameters each CloudNativePG Cluster's PostgreSQL runs, by (namespace, name)
    pub(crate) live_parameters: Mutex<std::collections::HashMap<(String, String), Value>>,
    requests: std::sync::atomic::AtomicU64,
    watches: Mutex<std::collections::HashMap<String, u64>>,
    /// the most bookmarks any one watch has sent (one per interval per watch, so this counts intervals)
    bookmark_rounds: tokio::sync::watch::Sender<u64>,
}

/// A simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// A simulator with the `default` namespace; starts its controllers (needs a Tokio runtime).
    pub fn new(options: SimulatorOptions) -> Self {
        let (changes, _) = broadcast::channel(options.change_buffer.max(1));
        let mut store = Store::with_history(changes.clone(), options.history);
        let ns = store.resource_type("", "v1", "namespaces").expect("built-in");
        let _ = store.create(&ns, "", json!({"metadata": {"name": "default"}}));
        let inner = Inner {
            store: Mutex::new(store),
            changes,
            counts: Mutex::default(),
            faults: Mutex::default(),
            options,
            settled: Mutex::default(),
            init_failures: Mutex::default(),
            live_parameters: Mutex::default(),
            requests: Default::default(),
            watches: Default::default(),
            bookmark_rounds: tokio::sync::watch::Sender::new(0),
        };
        let sim = Self { inner: Arc::new(inner) };
        crate::controllers::spawn(sim.clone());
        sim
    }

    /// Serves on `addr` (port 0 picks one); returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(bound)
    }

    /// Requests served, by `verb resource` (e.g. `patch statefulsets.apps`).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.counts).clone()
    }

    /// The most bookmarks any one watch has sent. A watch sends one per bookmark interval, so this grows by
    /// at most one per interval.
    pub fn bookmark_rounds(&self) -> u64 {
        *self.inner.bookmark_rounds.borrow()
    }

    /// Waits until [`Self::bookmark_rounds`] reaches `round`, at most `timeout`; returns whether it did.
    /// How a test lets time pass in the simulator's own terms (a quiet window) without sleeping: `n + 1`
    /// more rounds span at least `n` bookmark intervals.
    pub async fn wait_for_bookmark_round(&self, round: u64, timeout: Duration) -> bool {
        let mut rounds = self.inner.bookmark_rounds.subscribe();
        tokio::time::timeout(timeout, rounds.wait_for(|n| *n >= round)).await.is_ok_and(|r| r.is_ok())
    }

    /// Sets the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
        crate::controllers::resync(self);
    }

    /// Every change from now on, in resourceVersion order.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Waits until `ready` holds for the objects, at most `timeout`; re-checks after every change.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&Store) -> bool) -> bool {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready(&self.store()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return ready(&self.store()),
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Direct access to the objects (for tests and simulated controllers).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.store)
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/sim/requests", get(requests))
            .route("/sim/faults", post(set_faults).get(get_faults))
            .route("/version", get(|| async { Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-k8s-sim", "platform": "linux/amd64"})) }))
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})) }))
            .route("/apis", get(groups))
            .fallback(resource)
            .with_state(self.clone())
    }

    fn count(&self, verb: &str, resource: &str) {
        *lock(&self.inner.counts).entry(format!("{verb} {resource}")).or_default() += 1;
    }
}

async fn requests(State(sim): State<Simulator>) -> Json<BTreeMap<String, u64>> {
    Json(sim.request_counts())
}

async fn get_faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(lock(&sim.inner.faults).clone())
}

async fn set_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> Json<Faults> {
    sim.set_faults(faults.clone());
    Json(faults)
}

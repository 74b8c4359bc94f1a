//! Agents in HA: two replicas of one cluster's agent elect the converging one through a Lease
//! (`cluster_agent::leader`). Each replica's Kubernetes client records when it wrote what and can be cut
//! off from the API server, so the tests see who wrote, when, and that a cut-off leader stops before a
//! standby starts.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use crate::common::{Backend, World};
use cluster_agent::{AgentConfig, Metrics, leader::Election};
use domain::ServiceType;
use tokio::time::Instant;

/// Short terms, so a test sees a takeover in seconds (production: 15 s, 10 s, 2 s).
fn election(identity: &str) -> Election {
    Election {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_millis(2600),
        retry_period: Duration::from_millis(400),
        ..Election::new("default", identity)
    }
}

/// Instances converging while the leader dies: 200 on either backend (`CP_HA_INSTANCES` to choose). On the
/// real API server they are ready ~20–45 s after the kill on two shared cores (ARCHITECTURE.md "Agent
/// replicas").
fn instances() -> usize {
    std::env::var("CP_HA_INSTANCES").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
}

/// Every write (not GET) one replica's client sent, with when it was sent.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<(Instant, String)>>>);

impl Writes {
    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
    fn last(&self) -> Option<Instant> {
        self.all().last().map(|(at, _)| *at)
    }
    fn first_after(&self, after: Instant) -> Option<Instant> {
        self.all().into_iter().map(|(at, _)| at).find(|at| *at > after)
    }
    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|(_, w)| w.contains(what)).count()
    }
}

/// The recording, partitionable layer's service.
struct Replica<S> {
    inner: S,
    writes: Writes,
    cut_off: Arc<AtomicBool>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<kube::client::Body>> for Replica<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        // Every replica applies the CRD at start, before the election (idempotent; the simulator's
        // replicas are told to): not a write of the converging one.
        if request.method() != http::Method::GET
            && !request.uri().path().contains("/customresourcedefinitions")
        {
            let what = format!("{} {}", request.method(), request.uri().path());
            self.writes.0.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), what));
        }
        if self.cut_off.load(Ordering::SeqCst) {
            return Box::pin(async { Err(BoxError::from("cut off from the API server (test)")) });
        }
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map_err(Into::into) })
    }
}

struct Running {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    writes: Writes,
    cut_off: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Running {
    fn leading(&self) -> bool {
        self.metrics.leading.get() == 1
    }
}

/// Starts a replica of cluster 0's agent named `identity`.
async fn replica(world: &mut World, identity: &str) -> Running {
    let nats = world.connect_agent(0).await;
    let (writes, cut_off, metrics) =
        (Writes::default(), Arc::new(AtomicBool::new(false)), Metrics::default());
    let layer = {
        let (writes, cut_off) = (writes.clone(), cut_off.clone());
        tower::layer::layer_fn(move |inner| Replica {
            inner,
            writes: writes.clone(),
            cut_off: cut_off.clone(),
        })
    };
    let cluster = &world.clusters[0];
    let client = kube::client::ClientBuilder::try_from(cluster.kube.agent_config().await)
        .expect("client")
        .with_layer(&layer)
        .build();
    let config = AgentConfig {
        cluster: cluster.name.clone(),
        client,
        nats,
        settings: streams::Settings::default(),
        concurrency: 16,
        resync: Duration::from_secs(300),
        install_crd: cluster.kube.is_sim(),
        metrics: metrics.clone(),
        backup_store: None,
        heartbeat: Duration::from_secs(1),
        election: Some(election(identity)),
    };
    let task = tokio::spawn(cluster_agent::run_with(config, world.egress.clone()));
    Running { task, writes, cut_off, metrics }
}

/// Waits, at most `limit`, until `ready`; returns how long it took.
async fn within(limit: Duration, what: &str, ready: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

on_both_backends!(a_standby_takes_over_from_a_killed_leader_and_every_instance_ends_ready);

async fn a_standby_takes_over_from_a_killed_leader_and_every_instance_ends_ready(backend: Backend) {
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(200)).await;
    let first = replica(&mut world, "agent-a").await;
    within(Duration::from_secs(30), "the first replica leads", || first.leading()).await;
    let second = replica(&mut world, "agent-b").await;
    let terms = election("x");
    let n = instances();
    for i in 0..n {
        let service = [ServiceType::Mongodb, ServiceType::Grafana, ServiceType::Influxdb][i % 3];
        let version = match service {
            ServiceType::Mongodb => "7.0",
            ServiceType::Grafana => "11.6",
            _ => "2.7",
        };
        world.provision("c1", &format!("db-{i}"), service, version).await;
    }
    // Killed (as SIGKILL would: no release of the Lease, no goodbye) while the instances converge.
    let cluster = &world.clusters[0];
    let ready = |v: &crate::common::View| (0..n).filter(|i| v.ready_at(&format!("db-{i}"), 1)).count();
    cluster.converges("some instances ready", |v| ready(v) >= n / 10).await;
    let ready_before = ready(&cluster.view().await);
    first.task.abort();
    // Gone once the abort reached it (a poll on another thread may finish a request first).
    let _ = first.task.await;
    let killed = Instant::now();
    assert!(!second.leading(), "the standby led while the leader lived");
    let takeover = within(
        terms.lease_duration + terms.retry_period * 3 + Duration::from_secs(2),
        "the standby leads",
        || second.leading(),
    )
    .await;
    eprintln!(
        "{n} instances: the standby led {takeover:?} after the leader was killed (lease {:?})",
        terms.lease_duration
    );
    // Hundreds of instances on one API server and two cores take longer than the usual convergence wait.
    let converging = Instant::now();
    let all_ready = cluster.wait_until(Duration::from_secs(300), |v| ready(v) == n).await;
    let view = cluster.view().await;
    let left: Vec<String> = (0..n)
        .map(|i| format!("db-{i}"))
        .filter(|name| !view.ready_at(name, 1))
        .map(|name| {
            format!(
                "{name}: {}",
                view.managed_instance(&name).map(|mi| mi["status"].to_string()).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        all_ready,
        "{} of {n} instances not ready 300 s after the takeover, e.g. {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
    eprintln!("{n} instances: all ready {:?} after the kill", converging.elapsed() + takeover);

    // One writer at a time: the standby wrote nothing before the leader died.
    let first_writes = first.writes.last().expect("the leader wrote");
    let second_first =
        second.writes.all().first().map(|(at, _)| *at).expect("the standby wrote once leading");
    let early: Vec<String> = second
        .writes
        .all()
        .into_iter()
        .filter(|(at, _)| *at < killed)
        .map(|(at, what)| format!("{what} {:?} before the kill", killed - at))
        .collect();
    assert!(
        first_writes < killed && second_first > killed,
        "two replicas wrote at once: the standby's {early:?}"
    );
    // Nothing handled twice: the successor applied no workload of an instance the killed leader had
    // made ready, and every workload was applied.
    let applied = |w: &Writes| w.count("/statefulsets/");
    let (by_first, by_second) = (applied(&first.writes), applied(&second.writes));
    assert!(
        by_second <= n - ready_before && by_first + by_second >= n,
        "workloads applied by the killed leader {by_first}, by its successor {by_second}, {ready_before} of {n} ready at the kill"
    );
    second.task.abort();
}

on_both_backends!(a_leader_cut_off_from_the_api_server_stops_before_a_standby_starts);

async fn a_leader_cut_off_from_the_api_server_stops_before_a_standby_starts(backend: Backend) {
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(50)).await;
    let first = replica(&mut world, "agent-a").await;
    within(Duration::from_secs(30), "the first replica leads", || first.leading()).await;
    let second = replica(&mut world, "agent-b").await;
    world.provision("c1", "before", ServiceType::Mongodb, "7.0").await;
    let cluster = &world.clusters[0];
    cluster.converges("the instance ready", |v| v.ready_at("before", 1)).await;
    let terms = election("x");

    first.cut_off.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let stopped = within(terms.renew_deadline + Duration::from_secs(2), "the cut-off leader stops", || {
        !first.leading()
    })
    .await;
    let took_over = within(
        terms.lease_duration + terms.retry_period * 3 + Duration::from_secs(2),
        "the standby leads",
        || second.leading(),
    )
    .await;
    eprintln!("cut off: stopped after {stopped:?}, the standby led after {took_over:?}");
    // Fencing: every write the cut-off leader even tried was before the standby's first.
    let standby_first = second.writes.first_after(cut).expect("the standby wrote once leading");
    let last_tried = first.writes.last().expect("the leader wrote");
    assert!(last_tried < standby_first, "the cut-off leader tried a write after the standby began");

    // Healed, the old leader stays a standby: the new instance is the new leader's alone.
    first.cut_off.store(false, Ordering::SeqCst);
    let healed = Instant::now();
    world.provision("c1", "after", ServiceType::Grafana, "11.6").await;
    cluster.converges("the new instance ready", |v| v.ready_at("after", 1)).await;
    assert!(!first.leading(), "the old leader took the Lease back from a live leader");
    assert_eq!(first.writes.first_after(healed), None, "the old leader wrote after it healed");
    first.task.abort();
    second.task.abort();
}

//! Parts of the control plane as processes of their own, in this process: each API replica and projector
//! on a Tokio runtime of its own, so that killing one ([`Part::kill`]) stops its connection, its lease
//! renewals and everything else of it at once, as SIGKILL stops a process (nothing is released or
//! flushed; a lease it held expires).

use std::{future::Future, sync::Arc, time::Duration};

use api::AppState;
use streams::{Settings, read_models::ReadModelBucket};
use testkit::NatsServer;
use tokio::sync::watch;

use crate::{Replica, test_tokens};

/// How long a part may take to load what it reads at start.
const LOAD: Duration = Duration::from_secs(30);

/// A runtime standing for one process.
pub struct Part {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Part {
    /// A part whose threads are called `name`.
    pub fn new(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("a runtime");
        Self { runtime: Some(runtime) }
    }

    /// Runs `future` on this part's runtime (whatever it spawns stays there) and returns its output.
    pub async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("a live part");
        runtime.spawn(future).await.expect("the part's task")
    }

    /// Stops everything of this part at once, as SIGKILL stops a process.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connect options of the control plane's processes in tests: as the control plane, reconnecting
/// quickly (to whichever of the given servers answers).
pub fn control_plane_options() -> async_nats::ConnectOptions {
    NatsServer::connect_options()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
}

/// An API replica (`cp-api`) of its own.
pub struct ApiReplica {
    /// its name
    pub name: String,
    /// its runtime
    pub part: Part,
    /// its state (its read models among it)
    pub state: AppState,
    /// its router
    pub replica: Arc<Replica>,
}

impl ApiReplica {
    /// Starts a replica on the servers at `addresses` that opens the topology of `settings` (as a
    /// replica does after `cp-api --migrate`) and accepts the test tokens.
    pub async fn start(name: &str, addresses: Vec<String>, settings: Settings) -> Self {
        let part = Part::new(name);
        let state = part
            .run(async move {
                let nats = control_plane_options().connect(addresses.as_slice()).await.expect("connect");
                AppState::open(nats, &settings).await.expect("the API's state").with_tokens(test_tokens())
            })
            .await;
        let replica = Arc::new(Replica::new(state.clone()));
        Self { name: name.to_owned(), part, state, replica }
    }
}

/// A projector replica (`cp-projector run`): it asks for the lease `projector` and, while it holds it,
/// does the singleton's work (`projections::singleton`, without a backup store).
pub struct ProjectorReplica {
    /// its name (the lease's holder)
    pub name: String,
    /// its runtime
    pub part: Part,
    /// whether it leads
    pub leading: watch::Receiver<bool>,
}

impl ProjectorReplica {
    /// Starts a replica on the servers at `addresses`, with the topology of `settings`, its scheduler
    /// looking at the schedules every `scheduler_period`.
    pub async fn start(
        name: &str,
        addresses: Vec<String>,
        settings: Settings,
        scheduler_period: Duration,
    ) -> Self {
        let part = Part::new(name);
        let holder = name.to_owned();
        let leading = part
            .run(async move {
                let nats = control_plane_options().connect(addresses.as_slice()).await.expect("connect");
                let topology =
                    settings.open(&async_nats::jetstream::new(nats.clone())).await.expect("the topology");
                let models = projections::ReadModels::start(ReadModelBucket::new(&topology), LOAD)
                    .await
                    .expect("the read models");
                let clusters =
                    streams::clusters::ClusterRegistry::open(&topology).await.expect("the clusters");
                let singleton = projections::singleton::Singleton {
                    topology: topology.clone(),
                    models,
                    client: nats,
                    store: None,
                    metrics: projections::ProjectorMetrics::default(),
                    intake_metrics: projections::intake::IntakeMetrics::default(),
                    access_metrics: projections::store_access::StoreAccessMetrics::default(),
                    clusters,
                    limits: projections::intake::IntakeLimits::default(),
                    cluster_silence: crate::DEFAULT_CLUSTER_SILENCE,
                    retention_after_deprovision: chrono::TimeDelta::days(i64::from(
                        projections::backup_scheduler::RETENTION_AFTER_DEPROVISION_DAYS,
                    )),
                    scheduler_period,
                    migration_timeout: projections::migrations::DEFAULT_TIMEOUT,
                };
                let lease = streams::lease::Lease::new(&topology, "projector", &holder);
                let (tx, rx) = watch::channel(false);
                tokio::spawn(projections::leader::lead(lease, move || singleton.run(), tx));
                rx
            })
            .await;
        Self { name: name.to_owned(), part, leading }
    }

    /// Whether it leads now.
    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until it leads, at most `within`; returns whether it does.
    pub async fn wait_until_leading(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.leading.wait_for(|l| *l)).await.is_ok_and(|r| r.is_ok())
    }
}

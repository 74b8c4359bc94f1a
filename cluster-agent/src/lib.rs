//! The cluster agent: one per Kubernetes cluster.
//!
//! Two halves, connected only through the cluster's API server:
//! * [`mirror`]: consumes the cluster's instance events from JetStream (a durable consumer filtered on
//!   the server to `cp.evt.<cluster>.>`), folds them into desired state with the domain's own `apply`,
//!   and mirrors each instance into a `ManagedInstance` custom resource.
//! * [`controller`]: a kube-runtime `Controller` that reconciles each `ManagedInstance` into the workload
//!   objects it owns (server-side apply, one field manager), watches them, writes conditions into the
//!   resource's status, and publishes observed-state events to `cp.obs.<cluster>.…`.
//!
//! Architecture invariant: the agent never reads or writes another cluster's subjects, and never puts a
//! credential into an event: secrets are generated in the cluster.

mod backups;
pub mod controller;
pub mod crd;
mod credentials;
pub mod dry_run;
mod egress;
mod heartbeat;
pub mod leader;
pub mod metrics;
pub mod mirror;
mod publish;
pub mod rbac;
pub mod render;
pub mod store_access;
mod user_tokens;
mod users;

use std::{sync::Arc, time::Duration};

use kube::Client;

pub use metrics::Metrics;

/// Why an agent operation failed. All variants are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// the Kubernetes API refused or failed a request
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// the finalizer helper failed (boxed: it contains this type)
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// NATS refused or failed a request
    #[error("nats: {0}")]
    Nats(String),
    /// an object could not be (de)serialized
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// a stored event could not be decoded
    #[error("event decoding: {0}")]
    Decode(#[from] streams::DecodeError),
    /// the control plane gave no backup store keys (refused, or no answer)
    #[error("backup store keys: {0}")]
    StoreAccess(String),
    /// not done yet (deleted objects still present); retried, not a failure
    #[error("waiting: {0}")]
    Waiting(String),
}

impl Error {
    /// Low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Nats(_) => "nats",
            Self::Serde(_) => "serde",
            Self::Decode(_) => "decode",
            Self::StoreAccess(_) => "store_access",
            Self::Waiting(_) => "waiting",
        }
    }
}

/// Result with the agent's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    /// the cluster this agent serves
    pub cluster: String,
    /// Kubernetes client
    pub client: Client,
    /// NATS connection
    pub nats: async_nats::Client,
    /// JetStream names (the event stream's). The agent never creates or changes streams: it looks the
    /// event stream up and consumes its cluster's subjects; the API or an admin command owns the topology.
    pub settings: streams::Settings,
    /// reconciles in flight at most
    pub concurrency: u16,
    /// period of the resync that re-checks every instance against the watch caches (no requests unless
    /// something drifted); drift is normally caught at once through the watches
    pub resync: Duration,
    /// whether to install the ManagedInstance CRD at start (the simulator and dev clusters; production
    /// installs it from `deploy/crds/`)
    pub install_crd: bool,
    /// metrics
    pub metrics: Metrics,
    /// where this cluster's backups go; without one, backups are reported failed
    pub backup_store: Option<render::backup::StoreTarget>,
    /// how often the agent says it is alive (`heartbeat`); the control plane's silence before it marks
    /// the cluster unreachable should span several
    pub heartbeat: Duration,
    /// the election among the cluster's agent replicas (`leader`); `None`: this is the only replica
    pub election: Option<leader::Election>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

/// Builds a Kubernetes client that counts its requests into `metrics`.
pub fn counting_client(config: kube::Config, metrics: &Metrics) -> Result<Client> {
    let (requests, writes) = (metrics.kube_requests.clone(), metrics.kube_writes.clone());
    let layer = tower::util::MapRequestLayer::new(move |request: axum::http::Request<kube::client::Body>| {
        requests.inc();
        // Reads, lists and watches are GETs; everything else changes the cluster.
        if request.method() != axum::http::Method::GET {
            writes.inc();
        }
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// Runs the agent until the mirror, the controller or the credentials responder stops (they run until
/// cancelled), with the default egress settings: the project namespaces' pods may reach DNS, their
/// instances and the backup store when its endpoint is an address, and CloudNativePG's pods not the API
/// server (`render::egress`).
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    run_with(config, render::egress::EgressSettings::default()).await
}

/// Runs the agent with the operator's egress settings for the project namespaces (`render::egress`).
/// Refused: a block that overlaps link-local addresses, or a store endpoint that is not a URL.
pub async fn run_with(config: AgentConfig, egress: render::egress::EgressSettings) -> anyhow::Result<()> {
    let egress = Arc::new(render::egress::Egress::new(&egress, config.backup_store.as_ref())?);
    if egress.store_unreachable {
        tracing::warn!(
            "the backup store is named by a host name and no --backup-store-cidr was given: under a network \
             plugin that enforces NetworkPolicies, backups and WAL archiving cannot reach it"
        );
    }
    if !egress.reaches_api_server() {
        tracing::warn!(
            "no --api-server-cidr: under a network plugin that enforces NetworkPolicies, CloudNativePG's \
             instance manager cannot reach the API server and PostgreSQL instances do not start"
        );
    }
    if config.install_crd {
        // The API server may not answer yet (starting alongside the agent, or being upgraded): keep
        // asking, as the watches do, rather than exit.
        let mut wait = Duration::from_millis(100);
        while let Err(e) = controller::install_crd(&config.client).await {
            tracing::warn!(error = %e, "installing the ManagedInstance CRD failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    let config = Arc::new(config);
    // Every replica answers credential reads (reads only); one at a time converges: the mirror, the
    // controller, the egress policies, the backups and the heartbeat, started afresh each term.
    let mut always = tokio::task::JoinSet::new();
    always.spawn(credentials::run(config.clone()));
    let converging = {
        let config = config.clone();
        move || {
            let (config, egress) = (config.clone(), egress.clone());
            async move {
                let desired = Arc::new(mirror::Desired::default());
                // A JoinSet aborts its tasks when dropped: when one part stops, when the term ends, or
                // when the caller drops this future, the others stop too instead of running on detached.
                let mut halves = tokio::task::JoinSet::new();
                halves.spawn(mirror::run(config.clone(), egress.clone(), desired.clone()));
                halves.spawn(egress::run(config.clone(), egress, desired.clone()));
                halves.spawn(controller::run(config.clone(), desired.clone()));
                halves.spawn(backups::run(config.clone(), desired.clone()));
                halves.spawn(heartbeat::run(config.clone()));
                if let Some(stopped) = halves.join_next().await {
                    stopped??;
                }
                Ok(())
            }
        }
    };
    let leading = async {
        match &config.election {
            None => {
                config.metrics.leading.set(1);
                converging().await
            }
            Some(election) => {
                let (leading, mut changes) = tokio::sync::watch::channel(false);
                let gauge = config.metrics.leading.clone();
                let _gauge = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    while changes.changed().await.is_ok() {
                        gauge.set(i64::from(*changes.borrow()));
                    }
                }));
                election.lead(config.client.clone(), leading, converging).await
            }
        }
    };
    tokio::select! {
        ended = leading => ended,
        Some(stopped) = always.join_next() => stopped?,
    }
}

/// Backoff for retried reconciles.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(2);

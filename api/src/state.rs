//! What every handler shares.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream::Stream};
use projections::ReadModels;
use streams::{
    Settings, TopologyError,
    clusters::{ClusterRegistry, ClusterRegistryError},
    idempotency::IdempotencyKeys,
    instances::{DEFAULT_CACHE_CAPACITY, InstanceCommands},
    read_models::ReadModelBucket,
};

/// How long a read waits for the read models to include what it must see (its `Cp-Min-Sequence`, or the
/// end of the stream before it answers 404).
pub const DEFAULT_READ_WAIT: Duration = Duration::from_secs(5);
/// How long start-up may take to load the read models.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Shared state of the API. Cheap to clone: axum clones it for every request, and the JetStream handles
/// inside carry cached stream info (a deep clone of them cost ~15% of the API's CPU per request).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares, behind [`AppState`].
#[derive(Clone, Debug)]
pub struct Shared {
    /// runs instance commands
    pub commands: InstanceCommands,
    /// runs backup commands
    pub backups: streams::backups::BackupCommands,
    /// the read models the projector writes
    pub read_models: ReadModels,
    /// Idempotency-Key records
    pub idempotency: IdempotencyKeys,
    /// registered clusters
    pub clusters: ClusterRegistry,
    /// the NATS connection
    pub nats: async_nats::Client,
    /// the event stream (for readiness)
    pub events: Stream,
    /// see [`DEFAULT_READ_WAIT`]
    pub read_wait: Duration,
    /// what `/metrics` serves
    pub metrics: crate::metrics::ApiMetrics,
    /// the API tokens that authenticate callers
    pub tokens: crate::auth::ApiTokens,
    /// the OIDC issuer whose JWTs authenticate callers, if one is configured
    pub oidc: Option<crate::auth::OidcVerifier>,
    /// per-caller limits on feeds and history reads
    pub limits: crate::limits::CallerLimits,
    /// whether each cluster's agent is heard from (instances of a silent one show `unknown`)
    pub liveness: streams::liveness::LivenessView,
    /// version rollouts platform admins announced
    pub rollouts: streams::rollouts::Rollouts,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// streams or buckets could not be created
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// the cluster registry could not be read
    #[error(transparent)]
    Clusters(#[from] ClusterRegistryError),
    /// the read models could not be loaded
    #[error(transparent)]
    ReadModels(#[from] projections::ProjectionError),
    /// the clusters' liveness could not be followed
    #[error(transparent)]
    Liveness(#[from] streams::liveness::LivenessError),
}

impl AppState {
    /// Applies the topology (as the admin would, `cp-api --migrate`) and loads the read models. The
    /// projector (`cp-projector run`) keeps them current; this process only reads them.
    pub async fn start(nats: async_nats::Client, settings: &Settings) -> Result<Self, StartupError> {
        let topology = settings.apply(&jetstream::new(nats.clone())).await?;
        Self::on(nats, topology).await
    }

    /// Opens the topology without changing it (`Settings::open`: what an identity without stream
    /// administration can do) and loads the read models.
    pub async fn open(nats: async_nats::Client, settings: &Settings) -> Result<Self, StartupError> {
        let topology = settings.open(&jetstream::new(nats.clone())).await?;
        Self::on(nats, topology).await
    }

    async fn on(nats: async_nats::Client, topology: streams::Topology) -> Result<Self, StartupError> {
        let commands = InstanceCommands::new(&topology, DEFAULT_CACHE_CAPACITY);
        let read_models = ReadModels::start(ReadModelBucket::new(&topology), LOAD_TIMEOUT).await?;
        let clusters = ClusterRegistry::open(&topology).await?;
        let liveness = streams::liveness::LivenessView::follow(&topology).await?;
        Ok(Self(Arc::new(Shared {
            liveness,
            rollouts: streams::rollouts::Rollouts::new(&topology),
            backups: streams::backups::BackupCommands::new(&topology, DEFAULT_CACHE_CAPACITY),
            commands,
            read_models,
            idempotency: IdempotencyKeys::new(
                topology.idempotency.clone(),
                &topology.jetstream,
                topology.settings.commit_mode,
            ),
            clusters,
            nats,
            events: topology.events,
            read_wait: DEFAULT_READ_WAIT,
            metrics: crate::metrics::ApiMetrics::default(),
            // None until configured: a fresh state refuses every request that needs a token.
            tokens: crate::auth::ApiTokens::none(),
            oidc: None,
            limits: crate::limits::CallerLimits::default(),
        })))
    }

    /// The same state, with these per-caller limits.
    pub fn with_limits(&self, limits: crate::limits::CallerLimits) -> Self {
        Self(Arc::new(Shared { limits, ..Shared::clone(&self.0) }))
    }

    /// The same state, with commands checked against `catalog` (and the catalog routes and the OpenAPI
    /// document serving it) instead of the built-in one.
    pub fn with_catalog(&self, catalog: Arc<domain::Catalog>) -> Self {
        let commands = self.commands.clone().with_catalog(catalog);
        Self(Arc::new(Shared { commands, ..Shared::clone(&self.0) }))
    }

    /// The same state, authenticating callers with `tokens`.
    pub fn with_tokens(&self, tokens: crate::auth::ApiTokens) -> Self {
        Self(Arc::new(Shared { tokens, ..Shared::clone(&self.0) }))
    }

    /// The same state, also authenticating callers by JWTs from `oidc`'s issuer.
    pub fn with_oidc(&self, oidc: crate::auth::OidcVerifier) -> Self {
        Self(Arc::new(Shared { oidc: Some(oidc), ..Shared::clone(&self.0) }))
    }

    /// The catalog this API serves and checks commands against.
    pub fn catalog(&self) -> &domain::Catalog {
        self.commands.catalog()
    }

    /// The same state, but reads wait at most `read_wait` for the read models.
    pub fn with_read_wait(&self, read_wait: Duration) -> Self {
        Self(Arc::new(Shared { read_wait, ..Shared::clone(&self.0) }))
    }
}

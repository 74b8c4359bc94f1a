//! What every handler shares.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use projections::Projection;
use streams::{
    Settings, TopologyError,
    clusters::{ClusterRegistry, ClusterRegistryError},
    idempotency::IdempotencyKeys,
    instances::{DEFAULT_CACHE_CAPACITY, InstanceCommands},
};

/// How long a write waits for this replica's read model to include it, so that the client's next read
/// sees it. The write is durable either way; past this, the response is sent regardless.
pub const DEFAULT_WRITE_VISIBILITY_WAIT: Duration = Duration::from_secs(5);
/// How long start-up may take to fold the existing stream.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// Shared state of the API.
#[derive(Clone, Debug)]
pub struct AppState {
    /// runs instance commands
    pub commands: InstanceCommands,
    /// desired-state read model
    pub projection: Projection,
    /// Idempotency-Key records
    pub idempotency: IdempotencyKeys,
    /// registered clusters
    pub clusters: ClusterRegistry,
    /// the NATS connection
    pub nats: async_nats::Client,
    /// the event stream (for readiness)
    pub events: Stream,
    /// see [`DEFAULT_WRITE_VISIBILITY_WAIT`]
    pub write_visibility_wait: Duration,
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
    /// the read model could not catch up with the stream
    #[error("read model did not catch up: {0}")]
    Projection(String),
}

impl AppState {
    /// Applies the topology, starts the read model and waits until it has folded the existing stream.
    pub async fn start(nats: async_nats::Client, settings: &Settings) -> Result<Self, StartupError> {
        let topology = settings.apply(&jetstream::new(nats.clone())).await?;
        let commands = InstanceCommands::new(&topology, DEFAULT_CACHE_CAPACITY);
        // The whole stream: instance events and the agents' observed-state events.
        let projection = Projection::spawn(topology.events.clone(), String::new());
        let mut events = topology.events.clone();
        let last =
            events.info().await.map_err(|e| StartupError::Projection(e.to_string()))?.state.last_sequence;
        if !projection.wait_for(last, CATCH_UP_TIMEOUT).await {
            return Err(StartupError::Projection(format!(
                "applied {} of {last} messages in {CATCH_UP_TIMEOUT:?}",
                projection.applied()
            )));
        }
        let clusters = ClusterRegistry::open(topology.clusters.clone()).await?;
        Ok(Self {
            commands,
            projection,
            idempotency: IdempotencyKeys::new(topology.idempotency.clone()),
            clusters,
            nats,
            events: topology.events,
            write_visibility_wait: DEFAULT_WRITE_VISIBILITY_WAIT,
        })
    }
}

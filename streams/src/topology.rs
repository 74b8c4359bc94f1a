//! Every JetStream name and setting of the control plane, in one place, applied idempotently at start.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::store::CommitMode;

mod open;

/// Prefix of every instance event subject: `cp.evt.<cluster>.<project>.<instance-id>`.
///
/// The cluster comes first so that a cluster agent's consumer filters `cp.evt.<cluster>.>` on the server;
/// the project second so that per-project feeds filter `cp.evt.*.<project>.>`.
pub const INSTANCE_EVENT_PREFIX: &str = "cp.evt";

/// Prefix of observed-state subjects: `cp.obs.<cluster>.<project>.<instance-id>`, written by cluster
/// agents. Separate from `cp.evt` so that an instance's event subject holds only its aggregate's events.
pub const OBSERVED_PREFIX: &str = "cp.obs";

/// Settings of the control plane's streams and buckets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// name of the event stream
    pub events_stream: String,
    /// replicas of every stream and bucket (1 locally; 3 in production, see ARCHITECTURE.md)
    pub replicas: usize,
    /// window in which JetStream drops a message whose `Nats-Msg-Id` it has seen
    pub duplicate_window: Duration,
    /// largest message the event stream accepts, in bytes
    pub max_message_bytes: i32,
    /// how long idempotency keys are remembered
    pub idempotency_ttl: Duration,
    /// name of the bucket reserving instance names per project
    pub names_bucket: String,
    /// name of the bucket remembering idempotency keys
    pub idempotency_bucket: String,
    /// name of the bucket registering clusters
    pub clusters_bucket: String,
    /// name of the bucket holding the read models (see [`crate::read_models`])
    pub read_models_bucket: String,
    /// name of the bucket saying whether each cluster's agent is heard from ([`crate::liveness`])
    pub liveness_bucket: String,
    /// name of the bucket holding the leases of singleton processes ([`crate::lease`])
    pub leases_bucket: String,
    /// name of the bucket holding the version rollouts platform admins announced ([`crate::rollouts`])
    pub rollouts_bucket: String,
    /// how long a lease lasts unless renewed: a standby takes over at most this long after its holder
    /// died (the bucket's `max_age`)
    pub lease_ttl: Duration,
    /// how the event store sends its messages; match it to the server's `sync_interval`
    /// (see ARCHITECTURE.md, *Durability*)
    pub commit_mode: CommitMode,
    /// most facts one cluster's intake holds on their way to the event stream ([`crate::intake`])
    pub intake_max_messages: i64,
    /// most bytes one cluster's intake holds
    pub intake_max_bytes: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            events_stream: "CP_EVENTS".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_message_bytes: 1024 * 1024,
            idempotency_ttl: Duration::from_secs(30 * 24 * 3600),
            names_bucket: "cp-instance-names".to_owned(),
            idempotency_bucket: "cp-idempotency".to_owned(),
            clusters_bucket: "cp-clusters".to_owned(),
            read_models_bucket: "cp-read-models".to_owned(),
            liveness_bucket: "cp-cluster-liveness".to_owned(),
            leases_bucket: "cp-leases".to_owned(),
            rollouts_bucket: "cp-rollouts".to_owned(),
            lease_ttl: Duration::from_secs(10),
            commit_mode: CommitMode::default(),
            // A thousand instances reporting ten facts each at once fit; a flood stops here.
            intake_max_messages: 10_000,
            intake_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the topology could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// creating or updating the event stream failed
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        /// stream name
        name: String,
        /// cause
        #[source]
        source: async_nats::Error,
    },
    /// a stream or bucket does not exist (opened without the right to create it)
    #[error("stream or bucket {name} does not exist: run `cp-api --migrate` with the admin identity first")]
    Missing {
        /// its name
        name: String,
    },
    /// creating or updating a bucket failed
    #[error("cannot create or update bucket {name}: {source}")]
    Bucket {
        /// bucket name
        name: String,
        /// cause
        #[source]
        source: async_nats::Error,
    },
}

/// Handles to the applied topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// settings it was built from
    pub settings: Settings,
    /// JetStream context
    pub jetstream: jetstream::Context,
    /// the event stream
    pub events: stream::Stream,
    /// name reservations
    pub names: kv::Store,
    /// idempotency keys
    pub idempotency: kv::Store,
    /// registered clusters
    pub clusters: kv::Store,
    /// read models written by the projector, read by every API replica
    pub read_models: kv::Store,
    /// the stream behind `read_models`
    pub read_models_stream: stream::Stream,
    /// whether each cluster's agent is heard from ([`crate::liveness`])
    pub liveness: kv::Store,
    /// leases of singleton processes ([`crate::lease`])
    pub leases: kv::Store,
    /// version rollouts ([`crate::rollouts`])
    pub rollouts: kv::Store,
}

impl Settings {
    /// Configuration of the event stream.
    pub fn events_stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.events_stream.clone(),
            description: Some(
                "Control-plane events, one message per command, one subject per instance".into(),
            ),
            subjects: vec![format!("{INSTANCE_EVENT_PREFIX}.>"), format!("{OBSERVED_PREFIX}.>")],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_message_size: self.max_message_bytes,
            // Direct gets serve the last message of an instance's subject: the aggregate load path.
            allow_direct: true,
            // The log is the source of truth; nothing may rewrite history.
            deny_delete: true,
            deny_purge: true,
            // Group commit sends concurrent commands' messages as one atomic batch (one fsync).
            allow_atomic_publish: true,
            ..Default::default()
        }
    }

    fn bucket(&self, bucket: &str, description: &str, max_age: Duration) -> kv::Config {
        kv::Config {
            bucket: bucket.to_owned(),
            description: description.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// [`Self::apply`], asked again a few times a second for at most `within` while it fails: right after
    /// a JetStream cluster has elected its metadata leader, the leader may not yet count every peer as
    /// online (it times out or answers "no suitable peers" for replicated streams), and a client can only
    /// learn that by asking again.
    pub async fn apply_when_placed(
        &self,
        jetstream: &jetstream::Context,
        within: Duration,
    ) -> Result<Topology, TopologyError> {
        let started = std::time::Instant::now();
        loop {
            match self.apply(jetstream).await {
                Err(e) if started.elapsed() < within => {
                    tracing::info!(error = %e, "the cluster cannot place the streams yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    /// Creates or updates the stream and buckets so that they match these settings. Safe to run from
    /// every process at every start.
    pub async fn apply(&self, jetstream: &jetstream::Context) -> Result<Topology, TopologyError> {
        jetstream
            .create_or_update_stream(self.events_stream_config())
            .await
            .map_err(|e| TopologyError::Stream { name: self.events_stream.clone(), source: e.into() })?;
        jetstream.create_or_update_stream(crate::dead_letters::stream_config(self.replicas)).await.map_err(
            |e| TopologyError::Stream {
                name: crate::dead_letters::DEAD_LETTERS_STREAM.to_owned(),
                source: e.into(),
            },
        )?;
        let events = jetstream
            .get_stream(&self.events_stream)
            .await
            .map_err(|e| TopologyError::Stream { name: self.events_stream.clone(), source: e.into() })?;
        let bucket = |name: &str, description: &str, max_age: Duration| {
            let config = self.bucket(name, description, max_age);
            let name = name.to_owned();
            async move {
                jetstream
                    .create_or_update_key_value(config)
                    .await
                    .map_err(|e| TopologyError::Bucket { name, source: e.into() })
            }
        };
        // Group commit sends concurrent reservations and claims as atomic batches, like the events. These
        // buckets are never passed through `create_or_update_key_value` once they exist: it knows nothing
        // of atomic batches and would turn them off until the next step turned them on again, and a group
        // committer refused in that window stops batching.
        let names = atomic_bucket(
            jetstream,
            self.bucket(&self.names_bucket, "Instance names reserved per project", Duration::ZERO),
        )
        .await?;
        let idempotency = atomic_bucket(
            jetstream,
            self.bucket(
                &self.idempotency_bucket,
                "Idempotency-Key records of API writes",
                self.idempotency_ttl,
            ),
        )
        .await?;
        let clusters =
            bucket(&self.clusters_bucket, "Registered Kubernetes clusters", Duration::ZERO).await?;
        let read_models = bucket(
            &self.read_models_bucket,
            "Read models folded from the event stream by the projector",
            Duration::ZERO,
        )
        .await?;
        let liveness = bucket(
            &self.liveness_bucket,
            "Whether each cluster's agent is heard from (heartbeats, not history)",
            Duration::ZERO,
        )
        .await?;
        let leases = bucket(
            &self.leases_bucket,
            "Leases of singleton processes (which projector replica leads)",
            self.lease_ttl,
        )
        .await?;
        let rollouts = bucket(
            &self.rollouts_bucket,
            "Version rollouts platform admins announced (their progress is read from the instances)",
            Duration::ZERO,
        )
        .await?;
        let read_models_stream = jetstream
            .get_stream(format!("KV_{}", self.read_models_bucket))
            .await
            .map_err(|e| TopologyError::Bucket { name: self.read_models_bucket.clone(), source: e.into() })?;
        Ok(Topology {
            settings: self.clone(),
            jetstream: jetstream.clone(),
            events,
            names,
            idempotency,
            clusters,
            read_models,
            read_models_stream,
            liveness,
            leases,
            rollouts,
        })
    }
}

/// A bucket whose stream takes atomic batches (group-committed creates, `crate::kv_create`). Created
/// when absent; when present, the settings this module manages are updated on its stream in one step that
/// keeps `allow_atomic_publish` on throughout.
async fn atomic_bucket(
    jetstream: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, TopologyError> {
    let name = config.bucket.clone();
    let failed = |e: async_nats::Error| TopologyError::Bucket { name: name.clone(), source: e };
    match jetstream.get_stream(format!("KV_{name}")).await {
        Ok(mut stream) => {
            let current = stream.info().await.map_err(|e| failed(e.into()))?.config.clone();
            let mut wanted = current.clone();
            wanted.description = Some(config.description.clone());
            wanted.max_age = config.max_age;
            wanted.num_replicas = config.num_replicas.max(1);
            wanted.max_messages_per_subject = config.history.max(1);
            wanted.allow_atomic_publish = true;
            if wanted != current {
                jetstream.update_stream(wanted).await.map_err(|e| failed(e.into()))?;
            }
        }
        Err(e) if !is_stream_not_found(&e) => return Err(failed(e.into())),
        Err(_) => {
            jetstream.create_key_value(config).await.map_err(|e| failed(e.into()))?;
            allow_atomic_publish(jetstream, &name).await?;
        }
    }
    jetstream.get_key_value(&name).await.map_err(|e| failed(e.into()))
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Lets the stream behind `bucket` take atomic batches (group-committed creates, `crate::kv_create`).
async fn allow_atomic_publish(jetstream: &jetstream::Context, bucket: &str) -> Result<(), TopologyError> {
    let failed = |e: async_nats::Error| TopologyError::Bucket { name: bucket.to_owned(), source: e };
    let mut stream = jetstream.get_stream(format!("KV_{bucket}")).await.map_err(|e| failed(e.into()))?;
    let mut config = stream.info().await.map_err(|e| failed(e.into()))?.config.clone();
    if !config.allow_atomic_publish {
        config.allow_atomic_publish = true;
        jetstream.update_stream(config).await.map_err(|e| failed(e.into()))?;
    }
    Ok(())
}

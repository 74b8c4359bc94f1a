//! Opening the topology without the right to change it: what the API and the projector do at start, so
//! that their NATS identity needs no stream administration ([`crate::identities::control_plane_permissions`]).
//! An internet-facing process whose identity could update or delete the event stream would put the whole
//! history one bug or one stolen seed away from loss; `cp-api --migrate`, run with the admin identity,
//! creates and updates the streams and buckets ([`Settings::apply`]).

use async_nats::jetstream;

use super::{Settings, Topology, TopologyError, is_stream_not_found};

impl Settings {
    /// The streams and buckets as they are, changing nothing; an error naming what is missing (run
    /// `cp-api --migrate` first) or unreachable.
    pub async fn open(&self, jetstream: &jetstream::Context) -> Result<Topology, TopologyError> {
        let stream = |name: String| async move {
            jetstream.get_stream(&name).await.map_err(|e| {
                if is_stream_not_found(&e) {
                    TopologyError::Missing { name }
                } else {
                    TopologyError::Stream { name, source: e.into() }
                }
            })
        };
        // A bucket is a stream `KV_<bucket>`: looked up as one first, so a missing bucket says so.
        let bucket = |name: String| async move {
            stream(format!("KV_{name}")).await?;
            jetstream.get_key_value(&name).await.map_err(|e| TopologyError::Bucket { name, source: e.into() })
        };
        let events = stream(self.events_stream.clone()).await?;
        stream(crate::dead_letters::DEAD_LETTERS_STREAM.to_owned()).await?;
        Ok(Topology {
            settings: self.clone(),
            jetstream: jetstream.clone(),
            events,
            names: bucket(self.names_bucket.clone()).await?,
            idempotency: bucket(self.idempotency_bucket.clone()).await?,
            clusters: bucket(self.clusters_bucket.clone()).await?,
            read_models: bucket(self.read_models_bucket.clone()).await?,
            read_models_stream: stream(format!("KV_{}", self.read_models_bucket)).await?,
            liveness: bucket(self.liveness_bucket.clone()).await?,
            leases: bucket(self.leases_bucket.clone()).await?,
            rollouts: bucket(self.rollouts_bucket.clone()).await?,
        })
    }
}

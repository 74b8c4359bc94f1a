//! Registered clusters, in a KV bucket (key: cluster name, value: its region), mirrored in memory by a
//! watch so placement never waits on NATS. Registering a cluster also makes what its agent reads
//! ([`crate::cluster_feed`]).

use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{self, Operation};
use domain::Cluster;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ClusterRecord {
    region: String,
}

/// Failure to reach the bucket.
#[derive(Debug, thiserror::Error)]
#[error("cluster registry unavailable: {0}")]
pub struct ClusterRegistryError(String);

fn unavailable(e: impl std::fmt::Display) -> ClusterRegistryError {
    ClusterRegistryError(e.to_string())
}

/// The cluster registry.
#[derive(Debug, Clone)]
pub struct ClusterRegistry {
    kv: kv::Store,
    known: Arc<RwLock<Vec<Cluster>>>,
    jetstream: async_nats::jetstream::Context,
    settings: crate::Settings,
}

impl ClusterRegistry {
    /// Reads the registry and keeps following it in a background task; brings every registered
    /// cluster's feed to the current settings.
    pub async fn open(topology: &crate::Topology) -> Result<Self, ClusterRegistryError> {
        let registry = Self {
            kv: topology.clusters.clone(),
            known: Arc::default(),
            jetstream: topology.jetstream.clone(),
            settings: topology.settings.clone(),
        };
        let mut watch = registry.kv.watch_with_history(">").await.map_err(unavailable)?;
        // The watch first delivers every current key, then changes; `seen_current` flips after the
        // initial values, so `open` returns with a complete view.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let known = registry.known.clone();
        let kv = registry.kv.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let initial = kv.status().await.map(|s| s.values()).unwrap_or(0);
            if initial == 0 {
                let _ = ready_tx.take().map(|tx| tx.send(()));
            }
            let mut seen = 0;
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                let mut clusters = known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                clusters.retain(|c| c.name != entry.key);
                if entry.operation == Operation::Put
                    && let Ok(record) = serde_json::from_slice::<ClusterRecord>(&entry.value)
                {
                    clusters.push(Cluster { name: entry.key.clone(), region: record.region });
                    clusters.sort_by(|a, b| a.name.cmp(&b.name));
                }
                drop(clusters);
                seen += 1;
                if entry.delta == 0 || seen >= initial {
                    let _ = ready_tx.take().map(|tx| tx.send(()));
                }
            }
        });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ready_rx).await;
        for cluster in registry.list() {
            registry.apply_feed(&cluster.name).await?;
        }
        Ok(registry)
    }

    /// Registers or updates a cluster, and waits until this process sees it. Its agent's stream and
    /// consumer exist before the cluster is listed, so nothing is placed on a cluster whose agent has
    /// nothing to read from.
    pub async fn register(&self, cluster: &Cluster) -> Result<(), ClusterRegistryError> {
        self.apply_feed(&cluster.name).await?;
        let record =
            serde_json::to_vec(&ClusterRecord { region: cluster.region.clone() }).map_err(unavailable)?;
        self.kv.put(&cluster.name, record.into()).await.map_err(unavailable)?;
        let mut clusters = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        clusters.retain(|c| c.name != cluster.name);
        clusters.push(cluster.clone());
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    async fn apply_feed(&self, cluster: &str) -> Result<(), ClusterRegistryError> {
        crate::cluster_feed::apply(&self.jetstream, &self.settings, cluster).await.map_err(unavailable)
    }

    /// The registered clusters, sorted by name.
    pub fn list(&self) -> Vec<Cluster> {
        self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

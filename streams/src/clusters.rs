//! Registered clusters, in a KV bucket (key: cluster name, value: its region and fleet state), mirrored
//! in memory by a watch so placement never waits on NATS. Registering a cluster also makes what its agent
//! reads ([`crate::cluster_feed`]). A cordoned cluster takes no new instances; a draining one is cordoned
//! and has its instances moved off by `projections::migrations`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use async_nats::jetstream::kv::{self, Operation};
use domain::Cluster;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ClusterRecord {
    region: String,
    #[serde(default, flatten)]
    fleet: FleetState,
}

/// What a platform admin decided about a cluster: whether it takes new instances, and whether its
/// instances are being moved off it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    /// no new instance is placed on it
    #[serde(default)]
    pub cordoned: bool,
    /// its instances are being moved to other clusters of its region (it is cordoned too)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A drain of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// how many of its instances move at once
    pub parallel: u32,
    /// who asked (recorded on each migration it starts)
    pub actor: String,
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
    fleet: Arc<RwLock<HashMap<String, FleetState>>>,
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
            fleet: Arc::default(),
            jetstream: topology.jetstream.clone(),
            settings: topology.settings.clone(),
        };
        let mut watch = registry.kv.watch_with_history(">").await.map_err(unavailable)?;
        // The watch first delivers every current key, then changes; `seen_current` flips after the
        // initial values, so `open` returns with a complete view.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (known, fleet) = (registry.known.clone(), registry.fleet.clone());
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
                let mut states = fleet.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                clusters.retain(|c| c.name != entry.key);
                states.remove(&entry.key);
                if entry.operation == Operation::Put
                    && let Ok(record) = serde_json::from_slice::<ClusterRecord>(&entry.value)
                {
                    clusters.push(Cluster { name: entry.key.clone(), region: record.region });
                    clusters.sort_by(|a, b| a.name.cmp(&b.name));
                    states.insert(entry.key.clone(), record.fleet);
                }
                drop((clusters, states));
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
    /// Registering it again keeps its fleet state (cordon, drain).
    pub async fn register(&self, cluster: &Cluster) -> Result<(), ClusterRegistryError> {
        self.apply_feed(&cluster.name).await?;
        self.write(cluster, self.fleet_state(&cluster.name)).await
    }

    /// Sets what a platform admin decided about registered cluster `name`; `None` when it is not
    /// registered.
    pub async fn set_fleet_state(
        &self,
        name: &str,
        state: FleetState,
    ) -> Result<Option<Cluster>, ClusterRegistryError> {
        let Some(cluster) = self.list().into_iter().find(|c| c.name == name) else { return Ok(None) };
        self.write(&cluster, state).await?;
        Ok(Some(cluster))
    }

    async fn write(&self, cluster: &Cluster, fleet: FleetState) -> Result<(), ClusterRegistryError> {
        let record = ClusterRecord { region: cluster.region.clone(), fleet: fleet.clone() };
        let record = serde_json::to_vec(&record).map_err(unavailable)?;
        self.kv.put(&cluster.name, record.into()).await.map_err(unavailable)?;
        let mut clusters = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        clusters.retain(|c| c.name != cluster.name);
        clusters.push(cluster.clone());
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        drop(clusters);
        self.fleet
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cluster.name.clone(), fleet);
        Ok(())
    }

    /// What a platform admin decided about cluster `name` (nothing, for an unknown one).
    pub fn fleet_state(&self, name: &str) -> FleetState {
        self.fleet
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The clusters new instances may be placed on: registered and not cordoned, sorted by name.
    pub fn placeable(&self) -> Vec<Cluster> {
        // `known` before `fleet`, in the order the watch takes them.
        let clusters = self.list();
        let fleet = self.fleet.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cordoned = |c: &Cluster| fleet.get(&c.name).is_some_and(|f| f.cordoned || f.drain.is_some());
        clusters.into_iter().filter(|c| !cordoned(c)).collect()
    }

    async fn apply_feed(&self, cluster: &str) -> Result<(), ClusterRegistryError> {
        crate::cluster_feed::apply(&self.jetstream, &self.settings, cluster).await.map_err(unavailable)
    }

    /// The registered clusters, sorted by name.
    pub fn list(&self) -> Vec<Cluster> {
        self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

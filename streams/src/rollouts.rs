//! Version rollouts a platform admin announced, in a KV bucket (key: the rollout's id, value: what it
//! moves). A rollout is a standing instruction, not a history: the projector's roller
//! (`projections::rollouts`) holds its upgrade for every active instance of its service at its
//! `from_version`, and its progress is read from the instances themselves (what each holds, what gave it
//! the version it runs, what its cluster reports), so nothing here changes after the announcement.

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use domain::catalog::ServiceType;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A rollout: every active instance of `service` at `from_version` is to run `to_version`, applied in
/// its maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// its id
    pub id: Uuid,
    /// the service whose instances it moves
    pub service: ServiceType,
    /// the version they run
    pub from_version: String,
    /// the version they are to run
    pub to_version: String,
    /// when it was announced
    pub created_at: DateTime<Utc>,
    /// who announced it
    pub actor: String,
}

/// Failure to reach the bucket, or a record that does not read.
#[derive(Debug, thiserror::Error)]
#[error("rollouts unavailable: {0}")]
pub struct RolloutsError(String);

fn unavailable(e: impl std::fmt::Display) -> RolloutsError {
    RolloutsError(e.to_string())
}

/// The rollouts bucket.
#[derive(Debug, Clone)]
pub struct Rollouts {
    kv: kv::Store,
}

impl Rollouts {
    /// The rollouts of `topology`.
    pub fn new(topology: &crate::Topology) -> Self {
        Self { kv: topology.rollouts.clone() }
    }

    /// Records a new rollout (its id is fresh, so an existing key is an error).
    pub async fn create(&self, rollout: &Rollout) -> Result<(), RolloutsError> {
        let value = serde_json::to_vec(rollout).map_err(unavailable)?;
        self.kv.create(rollout.id.to_string(), value.into()).await.map_err(unavailable)?;
        Ok(())
    }

    /// The rollout `id`, if there is one.
    pub async fn get(&self, id: Uuid) -> Result<Option<Rollout>, RolloutsError> {
        match self.kv.get(id.to_string()).await.map_err(unavailable)? {
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(unavailable),
            None => Ok(None),
        }
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<Rollout>, RolloutsError> {
        let mut keys = match self.kv.keys().await {
            Ok(keys) => keys,
            Err(e) if e.kind() == kv::WatchErrorKind::TimedOut => return Ok(vec![]),
            Err(e) => return Err(unavailable(e)),
        };
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            ids.push(key.map_err(unavailable)?);
        }
        let mut rollouts = Vec::new();
        for id in ids.iter().filter_map(|k| k.parse::<Uuid>().ok()) {
            rollouts.extend(self.get(id).await?);
        }
        rollouts.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(rollouts)
    }
}

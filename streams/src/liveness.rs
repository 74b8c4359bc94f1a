//! Whether each cluster's agent is heard from: heartbeats, and the state the control plane derives from
//! them.
//!
//! An agent publishes a [`Heartbeat`] on its own observed subject [`heartbeat_subject`] every few seconds;
//! like its facts, it lands in the cluster's intake ([`crate::intake`]), where the intake gate takes it
//! off and records it here instead of moving it onto the event stream: a heartbeat is a current fact, not
//! history, and a hundred clusters beating every ten seconds would add most of a million messages a day
//! to a stream that is never purged. The projector's liveness watch marks a cluster that falls silent
//! `unreachable`; the API then shows every instance on it as `unknown`, with the reason and the time of
//! the last heartbeat, until heartbeats resume.
//!
//! Trust: the cluster is the subject's (NATS binds it to the publisher), the time is the intake's clock;
//! what a heartbeat says of itself (agent, version, lag) is shown, never acted on.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use async_nats::jetstream::kv::{self, Operation};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::{instances::observed_cluster_filter, intake};

/// The last token of a heartbeat's subject (a leading `_`: no project can be named so, and
/// `streams::observed::parse_observed_subject` refuses it as a fact).
const HEARTBEAT_TOKEN: &str = "_heartbeat";

/// The subject `cluster`'s agent publishes its heartbeats on, in its own account.
pub fn heartbeat_subject(cluster: &str) -> String {
    observed_cluster_filter(cluster).replacen('>', HEARTBEAT_TOKEN, 1)
}

/// The cluster whose heartbeat an intake subject carries; `None` for any other subject.
pub fn heartbeat_of(intake_subject: &str) -> Option<&str> {
    let rest = intake_subject.strip_prefix(intake::INTAKE_PREFIX)?.strip_prefix('.')?;
    let (cluster, token) = rest.split_once('.')?;
    (token == HEARTBEAT_TOKEN && !cluster.is_empty()).then_some(cluster)
}

/// What an agent says of itself at each beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// which replica of the agent (its pod or host name)
    pub agent: String,
    /// the agent's version
    pub version: String,
    /// messages of its feed not yet delivered to it
    pub lag: u64,
    /// when it last finished reconciling an instance
    pub last_reconcile: Option<DateTime<Utc>>,
}

impl Heartbeat {
    /// Publishes it on `cluster`'s heartbeat subject and waits for the intake's acknowledgement.
    pub async fn publish(
        &self,
        jetstream: &async_nats::jetstream::Context,
        cluster: &str,
    ) -> Result<(), async_nats::Error> {
        let body = serde_json::to_vec(self)?;
        jetstream.publish(heartbeat_subject(cluster), body.into()).await?.await?;
        Ok(())
    }
}

/// Whether a cluster is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// its agent's heartbeats arrive
    Reachable,
    /// no heartbeat for longer than the configured silence
    Unreachable,
}

/// What the control plane knows of a cluster's agent: one record per cluster in the liveness bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLiveness {
    /// reachable or not
    pub state: ClusterState,
    /// since when it is in that state
    pub since: DateTime<Utc>,
    /// when the last heartbeat reached the control plane (the intake's clock)
    pub last_heartbeat: DateTime<Utc>,
    /// the last heartbeat
    pub heartbeat: Heartbeat,
}

/// Failure to reach the liveness bucket.
#[derive(Debug, thiserror::Error)]
#[error("liveness bucket unavailable: {0}")]
pub struct LivenessError(String);

fn unavailable(e: impl std::fmt::Display) -> LivenessError {
    LivenessError(e.to_string())
}

/// The liveness bucket, as the intake gate and the projector's watch write it.
#[derive(Debug, Clone)]
pub struct LivenessBucket {
    kv: kv::Store,
}

impl LivenessBucket {
    /// The bucket of `topology`.
    pub fn new(topology: &crate::Topology) -> Self {
        Self { kv: topology.liveness.clone() }
    }

    /// Opens the bucket named in `settings` (the intake gate holds no `Topology`).
    pub async fn open(
        jetstream: &async_nats::jetstream::Context,
        settings: &crate::Settings,
    ) -> Result<Self, LivenessError> {
        Ok(Self { kv: jetstream.get_key_value(&settings.liveness_bucket).await.map_err(unavailable)? })
    }

    /// The record of `cluster`, with its revision.
    pub async fn get(&self, cluster: &str) -> Result<Option<(ClusterLiveness, u64)>, LivenessError> {
        let Some(entry) = self.kv.entry(cluster).await.map_err(unavailable)? else { return Ok(None) };
        if entry.operation != Operation::Put {
            return Ok(None);
        }
        let record = serde_json::from_slice(&entry.value).map_err(unavailable)?;
        Ok(Some((record, entry.revision)))
    }

    /// Records `heartbeat` from `cluster`, received at `at`: the cluster is reachable (since `at` if it
    /// was not).
    pub async fn record_heartbeat(
        &self,
        cluster: &str,
        heartbeat: Heartbeat,
        at: DateTime<Utc>,
    ) -> Result<(), LivenessError> {
        let since = match self.get(cluster).await? {
            Some((previous, _)) if previous.state == ClusterState::Reachable => previous.since,
            _ => at,
        };
        let record = ClusterLiveness { state: ClusterState::Reachable, since, last_heartbeat: at, heartbeat };
        let body = serde_json::to_vec(&record).map_err(unavailable)?;
        self.kv.put(cluster, body.into()).await.map_err(unavailable)?;
        Ok(())
    }

    /// Marks every cluster whose last heartbeat is older than `silence` at `now` unreachable; returns
    /// those it marked. Written only if no heartbeat was recorded meanwhile (the record's revision).
    pub async fn mark_silent(
        &self,
        silence: chrono::TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, LivenessError> {
        let mut keys = self.kv.keys().await.map_err(unavailable)?;
        let mut clusters = Vec::new();
        while let Some(key) = keys.next().await {
            clusters.push(key.map_err(unavailable)?);
        }
        let mut marked = Vec::new();
        for cluster in clusters {
            let Some((mut record, revision)) = self.get(&cluster).await? else { continue };
            if record.state == ClusterState::Unreachable || now - record.last_heartbeat <= silence {
                continue;
            }
            record.state = ClusterState::Unreachable;
            record.since = now;
            let body = serde_json::to_vec(&record).map_err(unavailable)?;
            // A heartbeat recorded since the read wins: the update is refused.
            if self.kv.update(&cluster, body.into(), revision).await.is_ok() {
                marked.push(cluster);
            }
        }
        Ok(marked)
    }
}

/// Every cluster's liveness record, followed in memory (an API replica reads it on every instance it
/// shows). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LivenessView {
    records: Arc<RwLock<BTreeMap<String, ClusterLiveness>>>,
}

impl LivenessView {
    /// Follows `topology`'s liveness bucket in a background task.
    pub async fn follow(topology: &crate::Topology) -> Result<Self, LivenessError> {
        let view = Self::default();
        let mut watch = topology.liveness.watch_with_history(">").await.map_err(unavailable)?;
        let records = view.records.clone();
        tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                let mut records = records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                match serde_json::from_slice::<ClusterLiveness>(&entry.value) {
                    Ok(record) if entry.operation == Operation::Put => {
                        records.insert(entry.key, record);
                    }
                    _ => {
                        records.remove(&entry.key);
                    }
                }
            }
        });
        Ok(view)
    }

    /// `cluster`'s record, if its agent was ever heard from.
    pub fn get(&self, cluster: &str) -> Option<ClusterLiveness> {
        self.records.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(cluster).cloned()
    }

    /// `cluster`'s record if it is unreachable.
    pub fn unreachable(&self, cluster: &str) -> Option<ClusterLiveness> {
        self.get(cluster).filter(|r| r.state == ClusterState::Unreachable)
    }

    /// Whether any cluster is unreachable.
    pub fn any_unreachable(&self) -> bool {
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .any(|r| r.state == ClusterState::Unreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_its_cluster_s_own_and_no_fact() {
        assert_eq!(heartbeat_subject("eu-1"), "cp.obs.eu-1._heartbeat");
        assert_eq!(heartbeat_of("cp.intake.eu-1._heartbeat"), Some("eu-1"));
        assert_eq!(heartbeat_of("cp.intake.eu-1.acme.7c3e"), None);
        assert!(crate::observed::parse_observed_subject(&heartbeat_subject("eu-1")).is_none());
    }
}

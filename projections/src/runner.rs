//! The read models as one API replica sees them: a local copy of the read-model bucket, kept current by a
//! watch, and the checkpoint it has reached, for readers that need to see their own writes.
//!
//! Replicas never fold events themselves: the projector does, once, and every replica loads records
//! (one per instance and operation) instead of replaying the stream at start.

use std::{
    sync::{Arc, RwLock, RwLockReadGuard},
    time::Duration,
};

use async_nats::jetstream::kv::Operation;
use futures::StreamExt as _;
use streams::read_models::{ReadModelBucket, RecordKey};
use tokio::sync::watch;

use crate::instances::ReadModel;

/// How long the watch may stay quiet before the follower checks that it is not stuck behind the bucket.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Why the read models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// the bucket could not be read in time
    #[error("cannot load the read models: {0}")]
    Load(String),
}

/// The read models, kept current by a background task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadModels {
    model: Arc<RwLock<ReadModel>>,
    /// the projector checkpoint seen so far
    applied: watch::Receiver<u64>,
    /// the bucket revision seen so far
    revision: watch::Receiver<u64>,
}

impl ReadModels {
    /// Starts following `bucket` and waits, at most `timeout`, until everything it held at the call is
    /// loaded.
    pub async fn start(bucket: ReadModelBucket, timeout: Duration) -> Result<Self, ProjectionError> {
        let model = Arc::new(RwLock::new(ReadModel::default()));
        let (applied_tx, applied) = watch::channel(0);
        let (revision_tx, revision) = watch::channel(0);
        let last = bucket.last_revision().await.map_err(|e| ProjectionError::Load(e.to_string()))?;
        tokio::spawn(follow(bucket, model.clone(), applied_tx, revision_tx));
        let models = Self { model, applied, revision };
        let mut seen = models.revision.clone();
        match tokio::time::timeout(timeout, seen.wait_for(|r| *r >= last)).await {
            Ok(Ok(_)) => Ok(models),
            _ => Err(ProjectionError::Load(format!(
                "loaded up to revision {} of {last} in {timeout:?}",
                *models.revision.borrow()
            ))),
        }
    }

    /// Read access to the model.
    pub fn read(&self) -> RwLockReadGuard<'_, ReadModel> {
        self.model.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many messages the projector could not apply and skipped.
    pub fn skipped(&self) -> u64 {
        self.read().skipped()
    }

    /// The last stream sequence the read models are known to include.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until `ready` holds for the model, at most `timeout`. Returns whether it did.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&ReadModel) -> bool) -> bool {
        let mut revision = self.revision.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            revision.mark_unchanged();
            if ready(&self.read()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, revision.changed()).await.is_err() {
                return ready(&self.read());
            }
        }
    }

    /// Waits until the read models include stream sequence `sequence`, at most `timeout`. Returns whether
    /// they do.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|s| *s >= sequence)).await.is_ok_and(|r| r.is_ok())
    }
}

async fn follow(
    bucket: ReadModelBucket,
    model: Arc<RwLock<ReadModel>>,
    applied: watch::Sender<u64>,
    revision: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let seen = *revision.borrow();
        let mut entries = match bucket.watch(if seen == 0 { 0 } else { seen + 1 }).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "read-model watch not started; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        loop {
            let entry = match tokio::time::timeout(STALL_CHECK, entries.next()).await {
                Ok(Some(Ok(entry))) => entry,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "read-model watch failed; resuming");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // Quiet: make sure it is because nothing was written, not because the watch was lost.
                    match bucket.last_revision().await {
                        Ok(last) if last > *revision.borrow() => {
                            tracing::warn!("read-model watch stalled behind the bucket; resuming");
                            break;
                        }
                        _ => continue,
                    }
                }
            };
            if let (Some(key), Operation::Put) = (RecordKey::parse(&entry.key), entry.operation) {
                let mut model = model.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                match model.load_record(&key, &entry.value) {
                    Ok(()) if key == RecordKey::Checkpoint => {
                        applied.send_replace(model.last_sequence());
                    }
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "read-model record skipped"),
                }
            }
            revision.send_replace(entry.revision);
        }
    }
}

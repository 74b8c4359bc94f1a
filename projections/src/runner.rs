//! Keeps a [`ReadModel`] current: an ordered consumer over the instance subjects, resumed from the last
//! applied sequence whenever it fails, and a watch channel of the applied sequence for readers that need
//! to see their own writes.

use std::{
    sync::{Arc, RwLock, RwLockReadGuard},
    time::Duration,
};

use async_nats::jetstream::{
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::Stream,
};
use futures::StreamExt as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::instances::ReadModel;

/// How long the consumer may stay quiet before the runner checks that it is not stuck behind the stream.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Why a projection could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// the stream could not be read
    #[error("cannot read the event stream: {0}")]
    Stream(String),
}

/// A read model kept current by a background task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Projection {
    model: Arc<RwLock<ReadModel>>,
    applied: watch::Receiver<u64>,
    skipped: Arc<AtomicU64>,
}

impl Projection {
    /// Starts following `stream` (subjects matching `filter`) from its beginning.
    pub fn spawn(stream: Stream, filter: String) -> Self {
        let model = Arc::new(RwLock::new(ReadModel::default()));
        let (applied_tx, applied) = watch::channel(0);
        let skipped = Arc::new(AtomicU64::new(0));
        tokio::spawn(follow(stream, filter, model.clone(), applied_tx, skipped.clone()));
        Self { model, applied, skipped }
    }

    /// Read access to the model.
    pub fn read(&self) -> RwLockReadGuard<'_, ReadModel> {
        self.model.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many messages could not be applied (unknown event type or schema version) and were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The last applied stream sequence.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until `ready` holds for the model, at most `timeout`. Returns whether it did.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&ReadModel) -> bool) -> bool {
        let mut applied = self.applied.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            applied.mark_unchanged();
            if ready(&self.read()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return ready(&self.read());
            }
        }
    }

    /// Waits until the model has applied `sequence`, at most `timeout`. Returns whether it has.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|s| *s >= sequence)).await.is_ok_and(|r| r.is_ok())
    }
}

async fn follow(
    stream: Stream,
    filter: String,
    model: Arc<RwLock<ReadModel>>,
    applied: watch::Sender<u64>,
    skipped: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let start = applied.borrow().saturating_add(1);
        let config = OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        };
        let started = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(async_nats::Error::from),
            Err(e) => Err(e.into()),
        };
        let mut messages = match started {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "projection consumer not started; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        loop {
            let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "projection consumer failed; resuming");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // Quiet for a while: make sure it is because nothing happened, not because the
                    // consumer was lost (a server restart can leave it silent). Resume if behind.
                    let mut stream = stream.clone();
                    match stream.info().await {
                        Ok(info) if info.state.last_sequence > *applied.borrow() => {
                            tracing::warn!("projection consumer stalled behind the stream; resuming");
                            break;
                        }
                        _ => continue,
                    }
                }
            };
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let result = model.write().unwrap_or_else(std::sync::PoisonError::into_inner).apply_message(
                sequence,
                message.subject.as_str(),
                &message.payload,
            );
            if let Err(e) = result {
                skipped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sequence, error = %e, "event batch skipped by the projection");
            }
            applied.send_replace(sequence);
        }
    }
}

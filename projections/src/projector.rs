//! The projector: folds the event stream into the read-model bucket.
//!
//! It loads the bucket (records, their revisions and the checkpoint), follows the event stream from the
//! checkpoint with an ordered consumer, folds in memory, and flushes the records that changed — one write
//! per record however many messages touched it since the last flush — then the checkpoint. It flushes as
//! soon as it has caught up with the stream (at most every 5 ms), and while it is behind at most every
//! [`MAX_FLUSH_DELAY`], so
//! a rebuild or a backlog folds in memory and writes each record a few times, not once per event.
//!
//! The checkpoint lives in the same bucket as the records and is written after them; each record carries
//! the last stream sequence folded into it. A projector killed between its record writes and its checkpoint
//! write replays from the old checkpoint and skips, record by record, what is already written: nothing is
//! applied twice and nothing is missed. Every write is conditional on the revision the projector last saw,
//! so a second projector cannot interleave stale records; the one that loses reloads the bucket.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use streams::dead_letters::{DeadLetter, Reader};
use streams::read_models::{ReadModelBucket, ReadModelWriteError, RecordKey, RecordWrite};
use tokio::sync::watch;

use crate::{
    instances::{ApplyError, RECORD_SCHEMA, ReadModel},
    rebuild::{self, LoadError},
};

/// While behind the stream, the longest the projector folds without writing.
pub const MAX_FLUSH_DELAY: Duration = Duration::from_millis(250);
/// The shortest time between two flushes. Under a steady stream of commands the projector is never
/// "behind" for long, and flushing after every message would cost a checkpoint write per command; this
/// bounds flushes to 200/s at the price of at most 5 ms of extra staleness.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// While behind the stream, the most changed records it holds before writing.
const MAX_CHANGED_RECORDS: usize = 50_000;
/// How long the consumer may stay quiet before the projector checks that it is not stuck behind the stream.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Why a projector pass ended. The projector reports it, reloads the bucket and starts again.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// the bucket could not be loaded
    #[error(transparent)]
    Load(#[from] LoadError),
    /// a flush failed (another projector wrote, or NATS did not accept it)
    #[error(transparent)]
    Write(#[from] ReadModelWriteError),
}

/// The projector's metrics (OpenMetrics, prefix `cp_projector`).
#[derive(Debug, Clone, Default)]
pub struct ProjectorMetrics {
    /// stream messages folded
    pub applied: Counter,
    /// messages that could not be applied (unknown event type or schema version) and were skipped
    pub skipped: Counter,
    /// flushes to the bucket
    pub flushes: Counter,
    /// records written (fewer than messages applied while behind: that is the coalescing)
    pub records_written: Counter,
    /// the last stream sequence written to the checkpoint
    pub checkpoint: Gauge,
    /// messages the consumer had yet to deliver at the last message
    pub pending: Gauge,
    /// passes that ended in an error and reloaded the bucket
    pub restarts: Counter,
    /// facts from clusters refused by [`crate::facts`], by reason (also counted in `skipped`)
    pub refused_facts: Family<RefusalLabels, Counter>,
}

/// The label of a refused fact: why it was refused ([`crate::facts::FactRefused::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// the reason
    pub reason: &'static str,
}

impl ProjectorMetrics {
    /// Registers every metric under the `cp_projector` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("cp_projector");
        r.register("applied_messages", "Stream messages folded", self.applied.clone());
        r.register(
            "skipped_messages",
            "Messages skipped because their event type or schema version is unknown",
            self.skipped.clone(),
        );
        r.register("flushes", "Flushes to the read-model bucket", self.flushes.clone());
        r.register("records_written", "Read-model records written", self.records_written.clone());
        r.register(
            "checkpoint_sequence",
            "Last stream sequence covered by the checkpoint",
            self.checkpoint.clone(),
        );
        r.register("pending_messages", "Messages not yet delivered to the projector", self.pending.clone());
        r.register("restarts", "Passes that failed and reloaded the bucket", self.restarts.clone());
        r.register(
            "refused_facts",
            "Facts from clusters refused because subject, payload and desired state disagree",
            self.refused_facts.clone(),
        );
        self
    }
}

/// Folds the event stream into the read-model bucket.
#[derive(Debug, Clone)]
pub struct Projector {
    events: Stream,
    bucket: ReadModelBucket,
    metrics: ProjectorMetrics,
    /// where skipped messages are parked (`streams::dead_letters`), when given
    dead_letters: Option<async_nats::jetstream::Context>,
}

impl Projector {
    /// A projector from the event stream into the bucket.
    pub fn new(events: Stream, bucket: ReadModelBucket, metrics: ProjectorMetrics) -> Self {
        Self { events, bucket, metrics, dead_letters: None }
    }

    /// The same projector, parking each message it skips in the dead-letter stream through `jetstream`
    /// (as `cp-projector run` does), besides counting and logging it.
    pub fn parking_skipped(mut self, jetstream: async_nats::jetstream::Context) -> Self {
        self.dead_letters = Some(jetstream);
        self
    }

    /// Runs until the task is dropped, starting again (with back-off) after any failure. `checkpoint`
    /// receives every checkpoint written.
    pub async fn run(self, checkpoint: watch::Sender<u64>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let Err(e) = self.run_pass(&checkpoint).await;
            self.metrics.restarts.inc();
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(50);
            }
            tracing::warn!(error = %e, retry_in = ?backoff, "projector pass ended; reloading the read models");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Starts [`Self::run`] on a task and returns a receiver of the checkpoints it writes.
    pub fn spawn(self) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(self.run(tx));
        rx
    }

    /// One pass: load the bucket, then follow the stream until something fails.
    async fn run_pass(
        &self,
        checkpoint: &watch::Sender<u64>,
    ) -> Result<std::convert::Infallible, ProjectorError> {
        let loaded = rebuild::load_bucket(&self.bucket).await?;
        let mut revisions = loaded.revisions;
        let mut model = if loaded.checkpoint.schema == RECORD_SCHEMA {
            loaded.model
        } else {
            // Records of another format (or none): fold everything again and overwrite them.
            tracing::info!(
                found = loaded.checkpoint.schema,
                want = RECORD_SCHEMA,
                "folding the stream from the start"
            );
            ReadModel::default()
        };
        let mut written = model.last_sequence();
        checkpoint.send_replace(written);
        tracing::info!(checkpoint = written, records = revisions.len(), "projector loaded the read models");
        let mut last_flush = Instant::now();
        loop {
            let start_sequence = model.last_sequence() + 1;
            let mut messages = match streams::read_models::follow_stream(&self.events, start_sequence).await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "projector consumer not started; retrying");
                    tokio::time::sleep(STALL_CHECK).await;
                    continue;
                }
            };
            loop {
                // With changes waiting for the minimum interval, wake up when it ends to write them.
                let wait = if model.last_sequence() > written {
                    MIN_FLUSH_INTERVAL.saturating_sub(last_flush.elapsed())
                } else {
                    STALL_CHECK
                };
                let next = tokio::time::timeout(wait, messages.next()).await;
                let message = match next {
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(error = %e, "projector consumer failed; resuming");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) if model.last_sequence() > written => {
                        written = self.flush(&mut model, &mut revisions).await?;
                        last_flush = Instant::now();
                        checkpoint.send_replace(written);
                        continue;
                    }
                    Err(_) => {
                        // Quiet: make sure it is because nothing happened, not because the consumer was lost
                        // (a server restart can leave it silent).
                        let mut events = self.events.clone();
                        match events.info().await {
                            Ok(info) if info.state.last_sequence > model.last_sequence() => {
                                tracing::warn!("projector consumer stalled behind the stream; resuming");
                                break;
                            }
                            _ => continue,
                        }
                    }
                };
                let Ok(info) = message.info() else { continue };
                let (sequence, pending) = (info.stream_sequence, info.pending);
                let stored_at = streams::history::stored_at(&info);
                if let Err(e) =
                    model.apply_message(sequence, message.subject.as_str(), &message.payload, stored_at)
                {
                    self.metrics.skipped.inc();
                    if let ApplyError::Refused(refused) = &e {
                        self.metrics
                            .refused_facts
                            .get_or_create(&RefusalLabels { reason: refused.reason() })
                            .inc();
                    }
                    tracing::error!(sequence, subject = %message.subject, error = %e, "message skipped by the projector");
                    if let Some(jetstream) = &self.dead_letters {
                        let stream = self.events.cached_info().config.name.clone();
                        // A refused fact is parked under its cluster (which the subject names), so
                        // that one cluster's refused facts push out only its own letters.
                        let reader = match (&e, streams::observed::parse_observed_subject(&message.subject)) {
                            (ApplyError::Refused(_), Some(bound)) => {
                                Reader::RefusedFact { cluster: bound.source.to_owned() }
                            }
                            _ => Reader::Projector,
                        };
                        let letter = DeadLetter::new(
                            reader,
                            &stream,
                            sequence,
                            &message.subject,
                            &e.to_string(),
                            &message.payload,
                        );
                        // Parked or not, the message stays skipped: the projector never stops for it.
                        if let Err(park) = letter.park(jetstream).await {
                            tracing::error!(sequence, error = %park, "parking a skipped message failed");
                        }
                    }
                }
                self.metrics.applied.inc();
                self.metrics.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
                let due = (pending == 0 && last_flush.elapsed() >= MIN_FLUSH_INTERVAL)
                    || last_flush.elapsed() >= MAX_FLUSH_DELAY
                    || model.changed_records() >= MAX_CHANGED_RECORDS;
                if due && model.last_sequence() > written {
                    written = self.flush(&mut model, &mut revisions).await?;
                    last_flush = Instant::now();
                    checkpoint.send_replace(written);
                }
            }
        }
    }

    /// Writes the changed records, then the checkpoint. Returns the checkpoint's sequence.
    async fn flush(
        &self,
        model: &mut ReadModel,
        revisions: &mut HashMap<String, u64>,
    ) -> Result<u64, ProjectorError> {
        let write = |key: String, value: Vec<u8>, revisions: &HashMap<String, u64>| RecordWrite {
            expected_revision: revisions.get(&key).copied().unwrap_or(0),
            key,
            value: value.into(),
        };
        let changes = model.take_changes();
        let count = changes.len();
        let writes = changes.into_iter().map(|(key, value)| write(key.key(), value, revisions)).collect();
        for (key, revision) in self.bucket.write_all(writes).await? {
            revisions.insert(key, revision);
        }
        let checkpoint = model.checkpoint();
        let value = serde_json::to_vec(&checkpoint).expect("checkpoint serializes");
        let (key, revision) = self.bucket.write(write(RecordKey::Checkpoint.key(), value, revisions)).await?;
        revisions.insert(key, revision);
        self.metrics.flushes.inc();
        self.metrics.records_written.inc_by(count as u64);
        self.metrics.checkpoint.set(i64::try_from(checkpoint.sequence).unwrap_or(i64::MAX));
        Ok(checkpoint.sequence)
    }
}

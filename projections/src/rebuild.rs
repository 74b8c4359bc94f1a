//! Loading the read-model bucket, folding the event stream from scratch, and comparing the two.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use async_nats::jetstream::{kv::Operation, stream::Stream};
use futures::StreamExt as _;
use streams::read_models::{ReadModelBucket, RecordKey};

use crate::instances::{Checkpoint, ReadModel, RecordError};

/// The longest a read may wait for its next message before it is declared stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the bucket or the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// NATS did not answer as expected
    #[error("cannot read {what}: {detail}")]
    Nats {
        /// what was being read
        what: &'static str,
        /// cause
        detail: String,
    },
    /// a record of the current format could not be decoded
    #[error(transparent)]
    Record(#[from] RecordError),
}

fn nats(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LoadError {
    move |e| LoadError::Nats { what, detail: e.to_string() }
}

/// What the bucket holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// the records and checkpoint, folded into a model
    pub model: ReadModel,
    /// the stored checkpoint (all zero when there is none)
    pub checkpoint: Checkpoint,
    /// the revision of every key
    pub revisions: HashMap<String, u64>,
}

/// Reads every current record of the bucket.
pub async fn load_bucket(bucket: &ReadModelBucket) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    if bucket.last_revision().await.map_err(|e| nats("the read-model bucket")(&e))? == 0 {
        return Ok(loaded);
    }
    let mut entries = bucket.watch(0).await.map_err(|e| nats("the read-model bucket")(&e))?;
    let mut undecodable = Vec::new();
    loop {
        let entry = tokio::time::timeout(READ_TIMEOUT, entries.next())
            .await
            .map_err(|e| nats("the read-model bucket")(&e))?
            .ok_or(LoadError::Nats { what: "the read-model bucket", detail: "watch ended".into() })?
            .map_err(|e| nats("the read-model bucket")(&e))?;
        loaded.revisions.insert(entry.key.clone(), entry.revision);
        if let (Some(key), Operation::Put) = (RecordKey::parse(&entry.key), entry.operation) {
            if key == RecordKey::Checkpoint
                && let Ok(checkpoint) = serde_json::from_slice(&entry.value)
            {
                loaded.checkpoint = checkpoint;
            }
            if let Err(e) = loaded.model.load_record(&key, &entry.value) {
                undecodable.push(e);
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    // Records of another format are expected when the format changed; the projector then folds again.
    if loaded.checkpoint.schema == crate::instances::RECORD_SCHEMA
        && let Some(e) = undecodable.into_iter().next()
    {
        return Err(e.into());
    }
    Ok(loaded)
}

/// A fold of the stream from its first message.
#[derive(Debug)]
pub struct Folded {
    /// the model
    pub model: ReadModel,
    /// messages read
    pub messages: u64,
    /// how long reading and folding took
    pub elapsed: Duration,
}

impl Folded {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Reads the stream from its first message through `last` with an ordered consumer; folds each message
/// into a fresh model unless `fold` is false (a raw read, the yardstick for the fold's rate).
pub async fn fold_stream(events: &Stream, last: u64, fold: bool) -> Result<Folded, LoadError> {
    let mut model = ReadModel::default();
    let started = Instant::now();
    let mut count = 0;
    if last > 0 {
        let mut messages = streams::read_models::follow_stream(events, 1)
            .await
            .map_err(|e| LoadError::Nats { what: "the event stream", detail: e })?;
        loop {
            let message = tokio::time::timeout(READ_TIMEOUT, messages.next())
                .await
                .map_err(|e| nats("the event stream")(&e))?
                .ok_or(LoadError::Nats { what: "the event stream", detail: "consumer ended".into() })?
                .map_err(|e| nats("the event stream")(&e))?;
            let info = message.info().map_err(|e| nats("a message's metadata")(&e))?;
            let (sequence, stored_at) = (info.stream_sequence, streams::history::stored_at(&info));
            if sequence > last {
                break;
            }
            count += 1;
            if fold
                && let Err(e) =
                    model.apply_message(sequence, message.subject.as_str(), &message.payload, stored_at)
            {
                tracing::warn!(sequence, error = %e, "message skipped by the rebuild");
            }
            if sequence == last {
                break;
            }
        }
    }
    Ok(Folded { model, messages: count, elapsed: started.elapsed() })
}

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verification {
    /// the live checkpoint compared at
    pub checkpoint: u64,
    /// the rebuild
    pub rebuilt: Folded,
    /// keys whose records differ (at most [`MAX_REPORTED`])
    pub differences: Vec<String>,
}

/// At most this many differing keys are reported.
pub const MAX_REPORTED: usize = 20;

/// Folds the stream from scratch up to the live checkpoint and compares the result with the live read
/// models. While the projector is writing, a load can catch records of a flush whose checkpoint is not
/// written yet; such a load is taken again (a few times) before comparing.
pub async fn verify(events: &Stream, bucket: &ReadModelBucket) -> Result<Verification, LoadError> {
    let mut live = load_bucket(bucket).await?;
    for _ in 0..10 {
        if live.model.newest_record() <= live.checkpoint.sequence {
            break;
        }
        tokio::time::sleep(crate::projector::MAX_FLUSH_DELAY).await;
        live = load_bucket(bucket).await?;
    }
    let rebuilt = fold_stream(events, live.checkpoint.sequence, true).await?;
    let differences = rebuilt.model.differences(&live.model, MAX_REPORTED);
    Ok(Verification { checkpoint: live.checkpoint.sequence, rebuilt, differences })
}

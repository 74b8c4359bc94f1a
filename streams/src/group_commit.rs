//! Group commit: appends of different aggregates that are waiting at the same time go to JetStream as
//! one atomic batch, so that they share one write and, under `sync_interval: always`, one fsync.
//!
//! With `sync_interval: always` nats-server fsyncs every message it stores, so single publishes are
//! bounded by the disk's fsync rate however many are in flight (~4,500/s on the development machine,
//! with a p99 of 30–40 ms at 64 in flight). An atomic batch is stored with one fsync.
//!
//! One task, the committer, owns the batches. It takes every append queued since its last commit (at
//! most [`MAX_BATCH`]) and waits for the answer before it takes the next ones, so the more appends arrive
//! while one commit is in flight, the larger the next. Fewer than [`MIN_BATCH`] are published one by one
//! (concurrently, each with its `Nats-Msg-Id`): a batch has a fixed cost that only pays off from about
//! that many messages. Appends arriving while lone publishes are in flight join them at once as long as
//! fewer than [`MIN_BATCH`] are outstanding, so a store with few writers pipelines its publishes as it
//! would without group commit; beyond that they wait and go as the next batch. After a batch
//! the committer lingers (at most [`MAX_LINGER`] or the batch's own time) until as many appends wait as
//! there were writers (the batch's members plus those that queued meanwhile): otherwise the writers it
//! just answered, busy preparing their next commands, miss the next batch, and the writers settle into
//! two alternating half-size batches, each waiting for the other (measured: batches of 32 for 64 HTTP
//! clients, each command waiting two commits).
//!
//! The price, handled by the caller ([`crate::store`]):
//! * A batch stands or falls as a whole: one stale expected sequence refuses every member. The members
//!   are then published one by one ([`Outcome::Refused`]). Commands on one aggregate are serialized
//!   in-process, so one process never puts two messages of one subject in a batch; refusals come only
//!   from other processes' writes.
//! * JetStream refuses `Nats-Msg-Id` inside batches, so batch members have no message id; a re-sent
//!   member is recognised by its command id instead (the expected-sequence check refuses the re-send, and
//!   the subject's next message after the expected sequence turns out to be the same command).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use async_nats::{
    HeaderMap, HeaderValue,
    header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE},
    jetstream::{self, ErrorCode, context::PublishErrorKind, message::PublishMessage, response::Response},
};
use bytes::Bytes;
use futures::{StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

/// Most appends in one batch. nats-server accepts up to 1,000; a refused batch costs more the larger it is.
pub const MAX_BATCH: usize = 256;

/// Fewest appends worth a batch; fewer are published one by one, concurrently. On a one-replica file
/// stream nats-server stages every batch in a file store of its own, a fixed cost of ~4 ms on the
/// development machine, against ~0.3 ms per single message's fsync and ~0.03 ms per batch member: a
/// batch only wins from about 14 messages on.
pub const MIN_BATCH: usize = 16;

/// Longest wait for the writers of the last batch to come back before the next batch goes without them.
pub const MAX_LINGER: Duration = Duration::from_millis(10);

/// Makes a message's headers (without `Nats-Msg-Id`) each time it is sent. A message may be sent more
/// than once (a refused batch, a lost answer), and rebuilding its headers then is cheaper than keeping a
/// copy of async-nats's `HeaderMap` for every message on the chance.
pub(crate) type Headers = Arc<dyn Fn() -> HeaderMap + Send + Sync>;

/// One message waiting to be committed. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Append {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    /// the `Nats-Msg-Id` to use if the message is published on its own
    pub(crate) message_id: HeaderValue,
    /// expected last sequence of the subject
    pub(crate) expected: u64,
}

/// What became of one append.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// stored at this stream sequence; `duplicate` when JetStream had already stored its message id
    Stored { sequence: u64, duplicate: bool },
    /// the subject's last sequence is not the expected one: nothing stored
    Conflict,
    /// the batch it was part of was refused as a whole, nothing of it stored: publish it on its own
    Refused,
    /// no answer in time: it may or may not be stored
    Unknown,
    /// any other failure: nothing stored
    Failed(String),
}

/// What a group committer has done since it started, for metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// batches committed
    pub batches: AtomicU64,
    /// messages committed in batches
    pub batched_messages: AtomicU64,
    /// messages the committer published alone (too few waiting for a batch)
    pub alone_messages: AtomicU64,
    /// batches refused as a whole (their members were then published alone)
    pub refused_batches: AtomicU64,
    /// batches that got no answer (their members were re-sent alone)
    pub unanswered_batches: AtomicU64,
}

/// Handle to the committer task. Cheap to clone; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct GroupCommitter {
    queue: mpsc::UnboundedSender<(Append, oneshot::Sender<Outcome>)>,
    pub(crate) stats: Arc<CommitStats>,
}

impl GroupCommitter {
    /// Starts the committer task on the current tokio runtime.
    pub(crate) fn start(jetstream: jetstream::Context, timeout: Duration) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(CommitStats::default());
        tokio::spawn(Committer { jetstream, timeout, batching: true, stats: stats.clone() }.run(receiver));
        Self { queue, stats }
    }

    /// Commits `append`, alone or in a batch with whatever else is waiting.
    pub(crate) async fn commit(&self, append: Append) -> Outcome {
        let (done, outcome) = oneshot::channel();
        if self.queue.send((append, done)).is_err() {
            return Outcome::Failed("the group committer has stopped".into());
        }
        outcome.await.unwrap_or(Outcome::Unknown)
    }
}

/// How often a message whose outcome is unknown (no acknowledgement) is re-sent, alone, with its message id
/// and the same expected sequence (so never stored twice).
pub(crate) const PUBLISH_RETRIES: usize = 2;

/// What finally became of one append sent by [`send`].
#[derive(Debug)]
pub(crate) enum Sent {
    /// stored at this stream sequence; `duplicate` when JetStream had already stored its message id
    Stored { sequence: u64, duplicate: bool },
    /// the subject's last sequence was not the expected one. `resent`: this was a re-send after an unknown
    /// outcome, so the first send may be what moved the subject on (a batch member has no message id to be
    /// recognised by).
    Conflict { resent: bool },
    /// still no answer after the re-sends: it may or may not be stored
    Unknown,
    /// anything else: nothing stored
    Failed(String),
}

/// Sends `append` through `committer` when there is one (else alone) and follows it through: a member of a
/// refused batch is published alone, and a message without an answer is re-sent alone up to
/// [`PUBLISH_RETRIES`] times.
pub(crate) async fn send(
    jetstream: &jetstream::Context,
    committer: Option<&GroupCommitter>,
    append: Append,
) -> Sent {
    let mut outcome = match committer {
        Some(committer) => committer.commit(append.clone()).await,
        None => publish_alone(jetstream, append.clone()).await,
    };
    // Re-sends after an unknown outcome; a refused batch's member going alone is not one.
    let mut attempt = 0;
    loop {
        match outcome {
            Outcome::Stored { sequence, duplicate } => return Sent::Stored { sequence, duplicate },
            Outcome::Conflict => return Sent::Conflict { resent: attempt > 0 },
            // Nothing of the batch was stored: go alone.
            Outcome::Refused => {}
            Outcome::Unknown if attempt < PUBLISH_RETRIES => {
                attempt += 1;
                // Re-sending while disconnected only queues another copy in the client.
                let state = jetstream.client().connection_state();
                if state != async_nats::connection::State::Connected {
                    return Sent::Failed(format!("NATS connection is {state}"));
                }
            }
            Outcome::Unknown => return Sent::Unknown,
            Outcome::Failed(e) => return Sent::Failed(e),
        }
        outcome = publish_alone(jetstream, append.clone()).await;
    }
}

/// Publishes one message with its message id and expected sequence, outside any batch.
pub(crate) async fn publish_alone(jetstream: &jetstream::Context, append: Append) -> Outcome {
    let Append { subject, payload, headers, message_id, expected } = append;
    let mut headers = headers();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    let message =
        PublishMessage::build().payload(payload).headers(headers).expected_last_subject_sequence(expected);
    let outcome = match jetstream.send_publish(subject, message).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(ack) => Outcome::Stored { sequence: ack.sequence, duplicate: ack.duplicate },
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Outcome::Conflict,
        Err(e) if e.kind() == PublishErrorKind::TimedOut => Outcome::Unknown,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

struct Committer {
    jetstream: jetstream::Context,
    timeout: Duration,
    /// false once the stream turned out not to allow atomic batches: every append then goes alone
    batching: bool,
    stats: Arc<CommitStats>,
}

type Waiting = (Append, oneshot::Sender<Outcome>);

/// The answer to a batch's commit message.
#[derive(Debug, Deserialize)]
struct BatchAck {
    /// stream sequence of the batch's last message
    seq: u64,
    /// batch id
    batch: String,
    /// messages stored
    count: usize,
}

impl Committer {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Waiting>) {
        let mut batch: Vec<Waiting> = Vec::with_capacity(MAX_BATCH);
        // Publishes sent alone and not answered yet.
        let mut alone: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
        let mut open = true;
        // After a batch: how many writers there are (the batch's members plus those that queued while it
        // was in flight) and what a commit costs.
        let mut last_batch: Option<(usize, Duration)> = None;
        loop {
            if !alone.is_empty() {
                // Lone publishes in flight: newcomers join them while fewer than MIN_BATCH are outstanding
                // (few writers: pipelined, as without group commit); the rest wait for them to be answered
                // and then go together, as a batch if there are enough.
                let room = MAX_BATCH - batch.len();
                tokio::select! {
                    _ = alone.next() => {}
                    received = queue.recv_many(&mut batch, room), if open && room > 0 => {
                        open = received > 0;
                        if alone.len() + batch.len() < MIN_BATCH {
                            self.send_alone(&mut batch, &alone);
                        }
                    }
                }
                continue;
            }
            if batch.is_empty() && !(open && queue.recv_many(&mut batch, MAX_BATCH).await > 0) {
                break;
            }
            if let Some((writers, took)) = last_batch
                && batch.len() < writers
            {
                // The writers of the last batch are coming back with their next commands: wait a little
                // for them rather than send a smaller batch now and leave them for the one after.
                let deadline = Instant::now() + took.min(MAX_LINGER);
                while batch.len() < writers {
                    let room = MAX_BATCH - batch.len();
                    match tokio::time::timeout_at(deadline, queue.recv_many(&mut batch, room)).await {
                        Ok(received) if received > 0 => {}
                        _ => break,
                    }
                }
            }
            if batch.len() < MIN_BATCH || !self.batching {
                // Too few to pay for a batch (or batches unavailable): publish them concurrently.
                last_batch = None;
                self.send_alone(&mut batch, &alone);
                continue;
            }
            let started = Instant::now();
            let outcome = self.send_batch(&mut batch).await;
            let count = batch.len();
            last_batch = Some(((count + queue.len()).min(MAX_BATCH), started.elapsed()));
            let counter = match &outcome {
                BatchResult::Stored(_) => {
                    self.stats.batched_messages.fetch_add(count as u64, Ordering::Relaxed);
                    &self.stats.batches
                }
                BatchResult::Refused => &self.stats.refused_batches,
                BatchResult::Unknown => &self.stats.unanswered_batches,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            for (index, (_, done)) in batch.drain(..).enumerate() {
                let _ = done.send(match &outcome {
                    // Members are stored in order, contiguously, ending at the commit message's sequence.
                    BatchResult::Stored(last) => {
                        Outcome::Stored { sequence: last - (count - 1 - index) as u64, duplicate: false }
                    }
                    BatchResult::Refused => Outcome::Refused,
                    BatchResult::Unknown => Outcome::Unknown,
                });
            }
        }
    }

    /// Publishes every append of `batch` on its own, adding the publishes to `alone`.
    fn send_alone(&self, batch: &mut Vec<Waiting>, alone: &FuturesUnordered<BoxFuture<'static, ()>>) {
        self.stats.alone_messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (append, done) in batch.drain(..) {
            let jetstream = self.jetstream.clone();
            alone.push(Box::pin(async move {
                let _ = done.send(publish_alone(&jetstream, append).await);
            }));
        }
    }

    /// Sends `batch` (at least two members) as one atomic batch: every member but the last is published
    /// without a reply subject, the last one commits and is answered for the whole batch.
    async fn send_batch(&mut self, batch: &mut [Waiting]) -> BatchResult {
        let client = self.jetstream.client();
        let members = batch.len();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let id_header = HeaderValue::from(id.as_str());
        let mut messages = batch.iter_mut().enumerate().map(|(index, (append, _))| {
            let mut headers = (append.headers)();
            headers.insert(NATS_BATCH_ID, id_header.clone());
            headers.insert(NATS_BATCH_SEQUENCE, (index + 1).to_string());
            headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, append.expected.to_string());
            (std::mem::take(&mut append.subject), headers, append.payload.clone())
        });
        for (subject, headers, payload) in messages.by_ref().take(members - 1) {
            if let Err(e) = client.publish_with_headers(subject, headers, payload).await {
                // Nothing is stored without the commit message: the server drops the partial batch.
                tracing::warn!(error = %e, "group commit: publishing a batch member failed");
                return BatchResult::Refused;
            }
        }
        let Some((subject, mut headers, payload)) = messages.next() else {
            return BatchResult::Refused;
        };
        headers.insert(NATS_BATCH_COMMIT, "1");
        let request =
            async_nats::Request::new().headers(headers).payload(payload).timeout(Some(self.timeout));
        let answer = match client.send_request(subject, request).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, members, "group commit: no answer to a batch");
                return BatchResult::Unknown;
            }
        };
        match serde_json::from_slice::<Response<BatchAck>>(&answer.payload) {
            Ok(Response::Ok(ack)) if ack.batch == id && ack.count == members => BatchResult::Stored(ack.seq),
            Ok(Response::Ok(ack)) => {
                tracing::error!(?ack, members, "group commit: the answer is for another batch");
                BatchResult::Unknown
            }
            Ok(Response::Err { error }) => {
                if error.error_code() == ErrorCode::ATOMIC_PUBLISH_DISABLED {
                    tracing::warn!(
                        "group commit: the stream does not allow atomic batches; publishing one by one"
                    );
                    self.batching = false;
                } else if error.error_code() != ErrorCode::STREAM_WRONG_LAST_SEQUENCE {
                    tracing::warn!(%error, members, "group commit: batch refused");
                }
                BatchResult::Refused
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit: unreadable answer to a batch");
                BatchResult::Unknown
            }
        }
    }
}

enum BatchResult {
    /// stored; the sequence of the last member
    Stored(u64),
    Refused,
    Unknown,
}

//! A cqrs-es event store on JetStream.
//!
//! * One subject per aggregate: `<prefix>.<partition>.<aggregate-id>`; the partition (for instances, the
//!   cluster) lets consumers filter on the server.
//! * One message per command, carrying all its events: atomic without batch publish.
//! * Optimistic concurrency: every publish carries `Nats-Expected-Last-Subject-Sequence`; a mismatch is
//!   cqrs-es's [`AggregateError::AggregateConflict`].
//! * `Nats-Msg-Id` is the command id, so a re-sent publish is dropped by JetStream. With group commit
//!   ([`CommitMode::Grouped`]) batch members carry none; a re-sent one is refused by its expected
//!   sequence and then recognised by the command id of the subject's next message after that sequence.
//! * Loading never replays: each message carries a snapshot, so a cold load is one direct get of the
//!   subject's last message (~0.15 ms), and a warm load is a cache hit. The cache is kept honest by the
//!   expected-sequence check: a stale entry makes the publish fail, the entry is dropped and reloaded.
//! * Commands on one aggregate are serialized in-process by the cache slot's lock, so concurrent requests
//!   in one process queue instead of conflicting; conflicts remain only between processes.

use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::{
    HeaderValue,
    connection::State,
    jetstream::{self, consumer::pull::OrderedConfig, context::traits::TimeoutProvider},
};
use bytes::Bytes;
use cqrs_es::{Aggregate, AggregateContext, AggregateError};
use futures::StreamExt as _;
use tokio::sync::OwnedMutexGuard;

use crate::{
    envelope::{CommandMetadata, EventBatch},
    group_commit::{self, Append, GroupCommitter, Sent},
};

mod cache;
mod cqrs;
mod execute;
mod read;
mod replica;

use cache::{Cache, Loaded};
use replica::Replica;

/// An aggregate that can live in a [`JetStreamStore`].
pub trait StreamAggregate: Aggregate + Clone + 'static {
    /// Version of the snapshot format (the aggregate's serde form). Bump it on an incompatible change:
    /// snapshots of another version are ignored and the aggregate's events replayed instead.
    const SNAPSHOT_VERSION: u32;

    /// Upcasters from every older schema of the aggregate's events to the current one, applied in order
    /// (see [`crate::EventBatch::decode_events`]).
    fn upcasters() -> &'static [Box<dyn cqrs_es::persist::EventUpcaster>] {
        &[]
    }

    /// Reads a snapshot of an older format `version` whose serde form the current type still reads, for an
    /// aggregate at `aggregate_version`; `None` (the default) when it cannot, and the events are replayed
    /// instead where possible.
    fn from_older_snapshot(
        version: u32,
        state: &str,
        aggregate_version: u64,
    ) -> Option<Result<Self, serde_json::Error>> {
        let _ = (version, state, aggregate_version);
        None
    }

    /// Subject token the aggregate's events are partitioned by (for instances, the cluster). Known once
    /// the aggregate's first event is applied.
    fn partition(&self) -> Option<&str>;

    /// The partition of the message carrying `events` (already applied to `self`): [`Self::partition`]
    /// unless the aggregate addresses some messages elsewhere (an instance's migration, see
    /// `domain::instance::migration`). A message on another partition's subject than the aggregate's
    /// last is still checked against the aggregate's last sequence, over all its partitions.
    fn message_partition<'a>(&'a self, events: &'a [Self::Event]) -> Option<&'a str> {
        let _ = events;
        self.partition()
    }

    /// Whether the aggregate's messages may be on several partitions' subjects (it moved, or began to):
    /// its writes are then checked against its last message on any of them, which costs the server a
    /// wildcard lookup per write.
    fn spans_partitions(&self) -> bool {
        false
    }
}

/// The result of a command that went through [`JetStreamStore::execute`].
#[derive(Debug, Clone)]
pub struct Committed<A: Aggregate> {
    /// aggregate version after the command (events since creation)
    pub version: u64,
    /// stream sequence of the message holding the command's events; `None` when it emitted none
    pub stream_sequence: Option<u64>,
    /// the events the command emitted
    pub events: Vec<<A as Aggregate>::Event>,
    /// JetStream had already stored this command id: nothing new was written
    pub duplicate: bool,
    /// the aggregate after the command (shared with the cache)
    pub aggregate: Arc<A>,
}

/// An aggregate as the stream holds it now ([`JetStreamStore::read_current`]).
#[derive(Debug, Clone)]
pub struct Current<A> {
    /// the aggregate after its last event
    pub aggregate: Arc<A>,
    /// its version (events since creation)
    pub version: u64,
    /// stream sequence of its subject's last message
    pub sequence: u64,
    /// when that message's command ran
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a command's message is ([`JetStreamStore::find_command`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    /// aggregate version after its events
    pub version: u64,
    /// its stream sequence
    pub sequence: u64,
    /// when the command ran
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Why [`JetStreamStore::execute`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    /// the aggregate refused the command
    #[error(transparent)]
    Rejected(E),
    /// the caller's expected version is not the current one
    #[error("expected version {expected}, current version is {current}")]
    VersionMismatch {
        /// what the caller expected
        expected: u64,
        /// what it is
        current: u64,
    },
    /// other writers kept winning the race; retryable
    #[error("concurrent modification; retry")]
    Conflict,
    /// NATS unreachable or slow; retryable. The command may or may not have been stored: retrying with
    /// the same command id is safe.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// stored data could not be read back; not retryable
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
}

/// The aggregate as loaded for one command; holds the aggregate's lock until committed or dropped.
pub struct JetStreamContext<A: StreamAggregate> {
    aggregate_id: String,
    aggregate: A,
    version: u64,
    last_sequence: u64,
    subject: Option<String>,
    chain: Option<String>,
    guard: OwnedMutexGuard<Option<Loaded<A>>>,
}

impl<A: StreamAggregate> JetStreamContext<A> {
    /// Aggregate version as loaded.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl<A: StreamAggregate> AggregateContext<A> for JetStreamContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

struct Inner<A> {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    prefix: String,
    cache: Cache<A>,
    committer: Option<GroupCommitter>,
}

/// How a store sends its messages to JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// every message is its own publish; they pipeline. Best when JetStream does not fsync every write
    /// (the default `sync_interval`).
    #[default]
    OneByOne,
    /// messages waiting at the same time go as one atomic batch, sharing one fsync; see
    /// [`crate::group_commit`]. Best with `sync_interval: always`. The stream must allow atomic publish.
    Grouped,
}

/// Event store for aggregates of type `A` on one JetStream stream. Cheap to clone.
pub struct JetStreamStore<A: StreamAggregate> {
    inner: Arc<Inner<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: StreamAggregate> Clone for JetStreamStore<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _aggregate: PhantomData }
    }
}

/// How often a command is retried after losing a race with another process.
const CONFLICT_RETRIES: usize = 8;

type StoreError<A> = AggregateError<<A as Aggregate>::Error>;

fn unavailable<A: Aggregate>(e: impl std::fmt::Display) -> StoreError<A> {
    AggregateError::DatabaseConnectionError(e.to_string().into())
}

fn corrupt<A: Aggregate>(e: impl std::fmt::Display) -> StoreError<A> {
    AggregateError::DeserializationError(e.to_string().into())
}

impl<A: StreamAggregate> JetStreamStore<A> {
    /// A store over `stream`, writing subjects under `prefix`, caching up to `cache_capacity` aggregates.
    /// [`CommitMode::Grouped`] starts a task on the current tokio runtime.
    pub fn new(
        jetstream: jetstream::Context,
        stream: jetstream::stream::Stream,
        prefix: impl Into<String>,
        cache_capacity: usize,
        mode: CommitMode,
    ) -> Self {
        let cache = Cache { slots: Mutex::default(), capacity: cache_capacity.max(1) };
        let committer = (mode == CommitMode::Grouped)
            .then(|| GroupCommitter::start(jetstream.clone(), TimeoutProvider::timeout(&jetstream)));
        Self {
            inner: Arc::new(Inner { jetstream, stream, prefix: prefix.into(), cache, committer }),
            _aggregate: PhantomData,
        }
    }

    /// What the group committer has done, when the store has one ([`CommitMode::Grouped`]).
    pub fn commit_stats(&self) -> Option<&group_commit::CommitStats> {
        self.inner.committer.as_ref().map(|c| &*c.stats)
    }

    /// Subject of an aggregate in a partition.
    pub fn subject(&self, partition: &str, aggregate_id: &str) -> String {
        format!("{}.{partition}.{aggregate_id}", self.inner.prefix)
    }

    /// The subjects of an aggregate on every partition: what its loads read the last message of.
    pub(crate) fn subject_pattern(&self, aggregate_id: &str) -> String {
        format!("{}.*.{aggregate_id}", self.inner.prefix)
    }

    fn ensure_connected(&self) -> Result<(), StoreError<A>> {
        // Fail fast while disconnected instead of queueing requests until they time out.
        match self.inner.jetstream.client().connection_state() {
            State::Connected => Ok(()),
            state => Err(unavailable::<A>(format!("NATS connection is {state}"))),
        }
    }

    /// Reads an aggregate from the stream: the last message of its subject, then its snapshot (or, when
    /// the snapshot is of another format, a replay of its subject).
    async fn fetch(&self, aggregate_id: &str, from: Replica) -> Result<Loaded<A>, StoreError<A>> {
        let Some(last) = self.last_message(aggregate_id, from).await? else { return Ok(Loaded::absent()) };
        let batch = EventBatch::from_slice(&last.payload).map_err(corrupt::<A>)?;
        let subject = last.subject.to_string();
        // The subject found the message, but the payload says whose it is: a message whose payload names
        // another aggregate (written by anything but this store, e.g. a server delivering into a subject
        // on someone's behalf) must never become this aggregate's state.
        if batch.aggregate_id != aggregate_id || batch.aggregate_type != A::TYPE {
            return Err(corrupt::<A>(format!(
                "the last message of {subject} (sequence {}) is of {} {:?}, not {} {aggregate_id:?}",
                last.sequence,
                batch.aggregate_type,
                batch.aggregate_id,
                A::TYPE
            )));
        }
        let aggregate: A = match batch.aggregate::<A>() {
            Some(aggregate) => aggregate.map_err(corrupt::<A>)?,
            None => self.replay(&subject, aggregate_id).await?.0,
        };
        Ok(Loaded {
            aggregate: Arc::new(aggregate),
            version: batch.last_version(),
            last_sequence: last.sequence,
            subject: Some(subject),
            updated_at: Some(batch.metadata.time),
            chain: last.headers.get(crate::headers::CHAIN).map(|v| v.as_str().to_owned()),
        })
    }

    /// Folds every event of one subject, in order, refusing a message of another aggregate. Returns the
    /// aggregate and each event with its version.
    async fn replay(
        &self,
        subject: &str,
        aggregate_id: &str,
    ) -> Result<(A, Vec<(u64, A::Event, CommandMetadata)>), StoreError<A>> {
        let mut aggregate = A::default();
        let mut events = Vec::new();
        let config = OrderedConfig { filter_subject: subject.to_owned(), ..Default::default() };
        self.scan(config, |sequence, batch| {
            if batch.aggregate_id != aggregate_id {
                return Err(corrupt::<A>(format!(
                    "message {sequence} of {subject} is of {:?}, not {aggregate_id:?}",
                    batch.aggregate_id
                )));
            }
            for (offset, event) in batch.decode_events::<A>().map_err(corrupt::<A>)?.into_iter().enumerate() {
                aggregate.apply(event.clone());
                events.push((batch.first_version + offset as u64, event, batch.metadata.clone()));
            }
            Ok(true)
        })
        .await?;
        Ok((aggregate, events))
    }

    /// Reads the messages an ordered consumer with `config` has pending when it starts, in order, each as
    /// its stream sequence and batch, until `visit` answers `false`.
    async fn scan(
        &self,
        config: OrderedConfig,
        mut visit: impl FnMut(u64, EventBatch) -> Result<bool, StoreError<A>>,
    ) -> Result<(), StoreError<A>> {
        let consumer = self.inner.stream.create_consumer(config).await.map_err(unavailable::<A>)?;
        let mut remaining = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(unavailable::<A>)?;
        while remaining > 0 {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| unavailable::<A>("reading a subject timed out"))?
                .ok_or_else(|| unavailable::<A>("reading a subject ended early"))?
                .map_err(unavailable::<A>)?;
            remaining -= 1;
            let sequence = message.info().map_err(unavailable::<A>)?.stream_sequence;
            let batch = EventBatch::from_slice(&message.payload).map_err(corrupt::<A>)?;
            if !visit(sequence, batch)? {
                break;
            }
        }
        Ok(())
    }

    async fn lock(&self, aggregate_id: &str) -> Result<JetStreamContext<A>, StoreError<A>> {
        self.lock_with(aggregate_id, false).await
    }

    /// Locks an aggregate's slot and loads it. With `assume_new`, a cache miss is taken to be an aggregate
    /// without events, saving the direct get; the publish's expected sequence 0 still refuses the
    /// command if the subject does have events.
    async fn lock_with(
        &self,
        aggregate_id: &str,
        assume_new: bool,
    ) -> Result<JetStreamContext<A>, StoreError<A>> {
        let mut guard = self.inner.cache.slot(aggregate_id).lock_owned().await;
        let loaded = match guard.as_ref() {
            Some(loaded) => loaded.clone(),
            None if assume_new => Loaded::absent(),
            None => {
                let loaded = self.fetch(aggregate_id, Replica::Any).await?;
                *guard = Some(loaded.clone());
                loaded
            }
        };
        Ok(JetStreamContext {
            aggregate_id: aggregate_id.to_owned(),
            // The one copy per command: the command mutates it, the cache keeps the original until commit.
            aggregate: A::clone(&loaded.aggregate),
            version: loaded.version,
            last_sequence: loaded.last_sequence,
            subject: loaded.subject,
            chain: loaded.chain,
            guard,
        })
    }

    /// Replaces a locked context's state with the stream's: when the caller's expected version differs
    /// from the cached one, the cache may only lag another process's write.
    async fn refresh(&self, context: &mut JetStreamContext<A>) -> Result<(), StoreError<A>> {
        let loaded = self.fetch(&context.aggregate_id, Replica::Leader).await?;
        context.aggregate = A::clone(&loaded.aggregate);
        context.version = loaded.version;
        context.last_sequence = loaded.last_sequence;
        context.subject = loaded.subject.clone();
        context.chain = loaded.chain.clone();
        *context.guard = (loaded.version > 0).then_some(loaded);
        Ok(())
    }

    /// The current state of an aggregate and its version (0: no events). Reads through the cache.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64), StoreError<A>> {
        let context = self.lock(aggregate_id).await?;
        Ok((context.aggregate, context.version))
    }

    /// The current state read from the stream, never from the cache: for decisions that another
    /// process's recent write may have changed (is a name's holder still absent?). A found aggregate
    /// refreshes the cache; an absent one is not cached, so it cannot linger as "absent" after it appears.
    pub async fn load_fresh(&self, aggregate_id: &str) -> Result<(A, u64), StoreError<A>> {
        let mut guard = self.inner.cache.slot(aggregate_id).lock_owned().await;
        let loaded = self.fetch(aggregate_id, Replica::Any).await?;
        if loaded.version > 0 {
            *guard = Some(loaded.clone());
        }
        Ok((A::clone(&loaded.aggregate), loaded.version))
    }

    /// Appends `events` as one message. On success the cache holds the new state; on a conflict or an
    /// unknown outcome the cache entry is dropped so the next load reads the stream.
    async fn append(
        &self,
        events: &[A::Event],
        context: JetStreamContext<A>,
        metadata: CommandMetadata,
    ) -> Result<(u64, bool, Arc<A>), StoreError<A>> {
        let partition = context
            .aggregate
            .message_partition(events)
            .ok_or_else(|| {
                AggregateError::UnexpectedError("aggregate has no partition after its events".into())
            })?
            .to_owned();
        let subject = self.subject(&partition, &context.aggregate_id);
        // A message on another subject than the aggregate's last, or of an aggregate whose messages are
        // on several subjects: its expected sequence is the aggregate's over every partition
        // (`subject_pattern`), not that subject's own, or a write made on another subject since would
        // go unnoticed.
        let moved = context.subject.as_ref().is_some_and(|last| *last != subject)
            || context.aggregate.spans_partitions();
        let moved_from = moved.then(|| self.subject_pattern(&context.aggregate_id));
        let (command_id, time) = (metadata.command_id, metadata.time);
        let (payload, headers) = EventBatch::encode(
            &context.aggregate_id,
            context.version + 1,
            events,
            metadata,
            Some((A::SNAPSHOT_VERSION, &context.aggregate)),
        )
        .map_err(corrupt::<A>)?;
        let chain = crate::chain::link(context.chain.as_deref(), &subject, &payload);
        let mut headers = headers.with_chain(chain.clone());
        if let Some(pattern) = &moved_from {
            headers = headers.with_expected_subjects(pattern.clone());
        }
        let last_version = context.version + events.len() as u64;
        let append = Append {
            subject: subject.clone(),
            payload: Bytes::from(payload),
            headers: Arc::new(move || headers.build()),
            message_id: HeaderValue::from(command_id.to_string().as_str()),
            expected: context.last_sequence,
        };
        let result = self.publish(append, command_id).await;
        let JetStreamContext { aggregate, mut guard, .. } = context;
        match result {
            Ok((sequence, duplicate)) => {
                let aggregate = Arc::new(aggregate);
                *guard = (!duplicate).then(|| Loaded {
                    aggregate: aggregate.clone(),
                    version: last_version,
                    last_sequence: sequence,
                    subject: Some(subject),
                    updated_at: Some(time),
                    chain: Some(chain),
                });
                Ok((sequence, duplicate, aggregate))
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    /// Publishes one command's message, through the group committer when there is one. Returns its
    /// stream sequence and whether JetStream had already stored it.
    async fn publish(&self, append: Append, command_id: uuid::Uuid) -> Result<(u64, bool), StoreError<A>> {
        self.ensure_connected()?;
        let (subject, expected) = (append.subject.clone(), append.expected);
        match group_commit::send(&self.inner.jetstream, self.inner.committer.as_ref(), append).await {
            Sent::Stored { sequence, duplicate } => Ok((sequence, duplicate)),
            // After an unknown outcome, the expected sequence may be refused because our own message did
            // land (a batch member has no message id to be dropped by).
            Sent::Conflict { resent: true } => match self.stored_after(&subject, expected, command_id).await?
            {
                Some(sequence) => Ok((sequence, true)),
                None => Err(AggregateError::AggregateConflict),
            },
            Sent::Conflict { resent: false } => Err(AggregateError::AggregateConflict),
            Sent::Unknown => Err(unavailable::<A>("no acknowledgement from JetStream")),
            Sent::Failed(e) => Err(unavailable::<A>(e)),
        }
    }

    /// Where command `command_id`'s message is, if it was stored on `subject` after sequence `expected`.
    /// Its expected-sequence check lets it land nowhere but as the subject's first message after
    /// `expected`, so one direct get answers, however many messages other writers added since.
    async fn stored_after(
        &self,
        subject: &str,
        expected: u64,
        command_id: uuid::Uuid,
    ) -> Result<Option<u64>, StoreError<A>> {
        // The aggregate's next message on any partition: a message that moved it is on another subject
        // than the one before.
        let pattern = subject
            .strip_prefix(self.inner.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .map_or_else(|| subject.to_owned(), |(_, id)| self.subject_pattern(id));
        let Some(message) = self.next_message(&pattern, expected + 1, Replica::Leader).await? else {
            return Ok(None);
        };
        let batch = EventBatch::from_slice(&message.payload).map_err(corrupt::<A>)?;
        Ok((batch.metadata.command_id == command_id).then_some(message.sequence))
    }
}

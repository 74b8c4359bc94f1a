//! Messages a reader could not use, parked where an operator can see them. A reader that meets a message
//! it cannot decode (bad JSON, an unknown event type, a newer schema) counts it, parks a copy here and
//! goes on with the next one: one bad message never holds up the rest, and none disappears unseen. The
//! original stays where it is (the event stream denies deletes); the copy says who parked it, where the
//! original is and why it was refused.
//!
//! Stream `CP_DEAD_LETTERS`, subjects `cp.dlq.<reader>`: `cp.dlq.projector`, `cp.dlq.agent.<cluster>`.
//! Read it with `nats stream view CP_DEAD_LETTERS`, or `GET /v1/admin/dead-letters`.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::headers;

/// Name of the stream.
pub const DEAD_LETTERS_STREAM: &str = "CP_DEAD_LETTERS";
/// Prefix of its subjects.
pub const DEAD_LETTER_PREFIX: &str = "cp.dlq";
/// How long parked messages are kept.
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

/// Who parks: the reader that refused the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reader {
    /// the read-model projector
    Projector,
    /// a cluster's agent
    Agent {
        /// the cluster
        cluster: String,
    },
    /// the projector, refusing a fact a cluster reported (`projections::facts`): parked per cluster, so
    /// a cluster that floods refused facts pushes out only its own letters
    RefusedFact {
        /// the cluster that reported it
        cluster: String,
    },
}

impl Reader {
    /// The subject this reader parks on.
    pub fn subject(&self) -> String {
        match self {
            Self::Projector => format!("{DEAD_LETTER_PREFIX}.projector"),
            Self::Agent { cluster } => format!("{DEAD_LETTER_PREFIX}.agent.{cluster}"),
            Self::RefusedFact { cluster } => format!("{DEAD_LETTER_PREFIX}.refused.{cluster}"),
        }
    }
}

/// A parked message: where the original is, why it was refused, and a copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// who refused it
    pub reader: Reader,
    /// the stream the reader read it from
    pub stream: String,
    /// its sequence there
    pub sequence: u64,
    /// its subject
    pub subject: String,
    /// why it was refused
    pub reason: String,
    /// when it was parked
    pub parked_at: DateTime<Utc>,
    /// the original payload, as text when it is UTF-8 (it is JSON when anything wrote it properly)
    pub payload: String,
}

impl DeadLetter {
    /// A dead letter for the message at `sequence` of `stream`, parked now.
    pub fn new(
        reader: Reader,
        stream: &str,
        sequence: u64,
        subject: &str,
        reason: &str,
        payload: &[u8],
    ) -> Self {
        Self {
            reader,
            stream: stream.to_owned(),
            sequence,
            subject: subject.to_owned(),
            reason: reason.to_owned(),
            parked_at: Utc::now(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }

    /// Parks it. A message redelivered to the same reader is parked once (within the duplicate window).
    pub async fn park(&self, jetstream: &jetstream::Context) -> Result<(), async_nats::Error> {
        let mut map = HeaderMap::new();
        map.insert(
            headers::MSG_ID,
            format!("{}:{}:{}", self.reader.subject(), self.stream, self.sequence).as_str(),
        );
        let body = serde_json::to_vec(self)?;
        jetstream.publish_with_headers(self.reader.subject(), map, Bytes::from(body)).await?.await?;
        Ok(())
    }
}

/// Most letters kept per reader; the oldest go first.
pub const DEAD_LETTERS_PER_READER: i64 = 10_000;

/// Configuration of the dead-letter stream.
pub fn stream_config(replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: DEAD_LETTERS_STREAM.to_owned(),
        description: Some("Messages a reader could not use, parked for an operator".into()),
        subjects: vec![format!("{DEAD_LETTER_PREFIX}.>")],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        max_age: DEAD_LETTER_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        // One subject per reader (`cp.dlq.agent.<cluster>` per cluster): an agent that floods its own
        // subject pushes out only its own older letters, never another reader's, and the stream stays
        // bounded (at most this many letters, each at most a message, per reader).
        max_messages_per_subject: DEAD_LETTERS_PER_READER,
        max_message_size: 1024 * 1024,
        ..Default::default()
    }
}

/// The parked messages after stream sequence `after`, at most `limit`, oldest first, with their
/// sequences in the dead-letter stream.
pub async fn list(
    jetstream: &jetstream::Context,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, DeadLetter)>, async_nats::Error> {
    use futures::StreamExt as _;
    let mut stream = jetstream.get_stream(DEAD_LETTERS_STREAM).await?;
    let last = stream.info().await?.state.last_sequence;
    if last <= after {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut parked = Vec::new();
    while parked.len() < limit {
        let Some(message) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await?.transpose()?
        else {
            break;
        };
        let sequence = message.info()?.stream_sequence;
        if let Ok(letter) = serde_json::from_slice(&message.payload) {
            parked.push((sequence, letter));
        }
        if sequence >= last {
            break;
        }
    }
    Ok(parked)
}

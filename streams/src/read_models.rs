//! The read-model bucket: key layout, conditional writes and the watch API replicas follow.
//!
//! One bucket holds every read model and the projector's checkpoint. One bucket because its stream orders
//! all writes: the checkpoint is written after the records it covers, so a reader that has seen checkpoint
//! `n` has seen every record folded from stream sequences up to `n`.
//!
//! Keys:
//! * `instance.<project>.<instance-id>`: an instance's desired spec, observed state and status
//! * `operations.<first-sequence>`: a page of operations created by one flush, keyed by the stream sequence
//!   of its first operation (zero-padded); immutable once written. Pages, not one key per operation: under
//!   write load every command creates an operation, and one write per operation would double the
//!   projector's writes (instance records coalesce; operations cannot)
//! * `projector.checkpoint`: the last event-stream sequence whose effects are all written
//!
//! Every write is conditional on the revision the writer last saw (`Nats-Expected-Last-Subject-Sequence`;
//! 0 for a key that must not exist yet), so two projectors can never interleave stale records: the one
//! that lost a race reloads and resumes.

use async_nats::jetstream::{
    kv::{self, UpdateErrorKind},
    stream,
};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use uuid::Uuid;

/// Key of the projector's checkpoint.
pub const CHECKPOINT_KEY: &str = "projector.checkpoint";

/// How many conditional writes are in flight at once during a flush.
const WRITES_IN_FLIGHT: usize = 256;

/// What a key in the bucket names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    /// an instance
    Instance {
        /// project
        project: String,
        /// instance id
        id: Uuid,
    },
    /// a backup
    Backup {
        /// project
        project: String,
        /// backup id
        id: Uuid,
    },
    /// a page of operations
    OperationPage {
        /// stream sequence of the page's first operation
        first_sequence: u64,
    },
    /// the projector's checkpoint
    Checkpoint,
}

impl RecordKey {
    /// The bucket key.
    pub fn key(&self) -> String {
        match self {
            Self::Instance { project, id } => format!("instance.{project}.{id}"),
            Self::Backup { project, id } => format!("backup.{project}.{id}"),
            Self::OperationPage { first_sequence } => format!("operations.{first_sequence:020}"),
            Self::Checkpoint => CHECKPOINT_KEY.to_owned(),
        }
    }

    /// Parses a bucket key; `None` for keys this version does not know (written by a newer one).
    pub fn parse(key: &str) -> Option<Self> {
        if key == CHECKPOINT_KEY {
            return Some(Self::Checkpoint);
        }
        if let Some(sequence) = key.strip_prefix("operations.") {
            return Some(Self::OperationPage { first_sequence: sequence.parse().ok()? });
        }
        let mut parts = key.splitn(3, '.');
        let (kind, project, id) = (parts.next()?, parts.next()?, parts.next()?);
        let (project, id) = (project.to_owned(), id.parse().ok()?);
        match kind {
            "instance" => Some(Self::Instance { project, id }),
            "backup" => Some(Self::Backup { project, id }),
            _ => None,
        }
    }
}

/// Why a write to the bucket failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelWriteError {
    /// another writer changed the key since this writer last saw it
    #[error("read model {key} was changed by another writer")]
    Conflict {
        /// the key
        key: String,
    },
    /// NATS did not accept the write
    #[error("cannot write read model {key}: {source}")]
    Unavailable {
        /// the key
        key: String,
        /// cause
        #[source]
        source: kv::UpdateError,
    },
}

/// One conditional write: key, value, and the revision the writer expects the key to have (0: absent).
#[derive(Debug, Clone)]
pub struct RecordWrite {
    /// bucket key
    pub key: String,
    /// encoded record
    pub value: Bytes,
    /// expected current revision (0 when the key must not exist)
    pub expected_revision: u64,
}

/// The read-model bucket.
#[derive(Debug, Clone)]
pub struct ReadModelBucket {
    store: kv::Store,
    /// the bucket's stream, for fresh state (`kv::Store::status` answers from a cache)
    stream: stream::Stream,
}

impl ReadModelBucket {
    /// The bucket of an applied topology.
    pub fn new(topology: &crate::Topology) -> Self {
        Self { store: topology.read_models.clone(), stream: topology.read_models_stream.clone() }
    }

    /// The underlying store.
    pub fn store(&self) -> &kv::Store {
        &self.store
    }

    /// Writes every record, many in flight at once, each conditional on its expected revision. Returns
    /// the new revision of each key, in no particular order. Stops at the first failure; records already
    /// written stay written (each is complete on its own; the caller's checkpoint is not advanced).
    pub async fn write_all(
        &self,
        writes: Vec<RecordWrite>,
    ) -> Result<Vec<(String, u64)>, ReadModelWriteError> {
        futures::stream::iter(writes)
            .map(|write| self.write(write))
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Writes one record conditional on its expected revision; returns the new revision.
    pub async fn write(&self, write: RecordWrite) -> Result<(String, u64), ReadModelWriteError> {
        let RecordWrite { key, value, expected_revision } = write;
        match self.store.update(&key, value, expected_revision).await {
            Ok(revision) => Ok((key, revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(ReadModelWriteError::Conflict { key })
            }
            Err(source) => Err(ReadModelWriteError::Unavailable { key, source }),
        }
    }

    /// The current value of every key (`from_revision` 0), or every write from a revision on; then every
    /// later write, in bucket order.
    pub async fn watch(&self, from_revision: u64) -> Result<kv::Watch, kv::WatchError> {
        if from_revision == 0 {
            // `watch_all` would deliver new writes only.
            self.store.watch_with_history(">").await
        } else {
            self.store.watch_all_from_revision(from_revision).await
        }
    }

    /// The bucket's last revision (the sequence of its newest write), 0 when it is empty.
    pub async fn last_revision(&self) -> Result<u64, async_nats::Error> {
        Ok(self.stream.clone().info().await?.state.last_sequence)
    }
}

/// Reads the whole event stream in order from `start_sequence` with an ordered consumer (ephemeral;
/// recreated by the client on a gap): how projectors and rebuilds fold it.
pub async fn follow_stream(
    events: &async_nats::jetstream::stream::Stream,
    start_sequence: u64,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, String> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let deliver_policy = match start_sequence {
        0 | 1 => DeliverPolicy::All,
        start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
    };
    let consumer = events
        .create_consumer(OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_unknown_kinds_are_not_guessed() {
        let id = Uuid::now_v7();
        for key in [
            RecordKey::Instance { project: "acme".into(), id },
            RecordKey::Backup { project: "acme".into(), id },
            RecordKey::OperationPage { first_sequence: 42 },
            RecordKey::Checkpoint,
        ] {
            assert_eq!(RecordKey::parse(&key.key()), Some(key));
        }
        assert_eq!(RecordKey::parse(&format!("schedule.acme.{id}")), None);
        assert_eq!(RecordKey::parse("instance.acme.not-a-uuid"), None);
    }
}

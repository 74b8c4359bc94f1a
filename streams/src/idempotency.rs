//! `Idempotency-Key` records: which operation a key produced, and a fingerprint of the request that
//! produced it. Kept in a KV bucket for the configured TTL (days), far beyond JetStream's duplicate window.

use async_nats::jetstream::{
    self,
    kv::{self, Operation},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{kv_create::KvCreates, store::CommitMode};

/// What a key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request (method, path, body)
    pub fingerprint: String,
    /// the operation the first request started
    pub operation_id: Uuid,
    /// the instance it addressed
    pub instance_id: Uuid,
    /// when the key was first used
    pub created_at: DateTime<Utc>,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// first use: go ahead with the given record's ids
    Fresh,
    /// the same request was made before: answer with its operation
    Replay(IdempotencyRecord),
    /// the key was used for a different request
    Mismatch(IdempotencyRecord),
}

/// Failure to reach the bucket.
#[derive(Debug, thiserror::Error)]
#[error("idempotency records unavailable: {0}")]
pub struct IdempotencyError(String);

fn unavailable(e: impl std::fmt::Display) -> IdempotencyError {
    IdempotencyError(e.to_string())
}

/// The idempotency bucket.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    kv: KvCreates,
}

/// Hex SHA-256 of the parts, NUL separated.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

impl IdempotencyKeys {
    /// Records in `kv`; with [`CommitMode::Grouped`] concurrent claims share atomic batches (see
    /// [`crate::kv_create`]).
    pub fn new(kv: kv::Store, jetstream: &jetstream::Context, mode: CommitMode) -> Self {
        Self { kv: KvCreates::new(kv, jetstream, mode) }
    }

    /// The bucket key for a client's key in a project (hashed: client keys are free text).
    pub fn key(project: &str, idempotency_key: &str) -> String {
        digest(&[project.as_bytes(), idempotency_key.as_bytes()])
    }

    /// Claims `key` for `record`; atomic on the server.
    pub async fn claim(&self, key: &str, record: &IdempotencyRecord) -> Result<Claim, IdempotencyError> {
        let value = Bytes::from(serde_json::to_vec(record).map_err(unavailable)?);
        for _ in 0..3 {
            if self.kv.create(key, value.clone()).await.map_err(unavailable)? {
                return Ok(Claim::Fresh);
            }
            let Some(entry) = self.kv.kv().entry(key).await.map_err(unavailable)? else { continue };
            if entry.operation != Operation::Put {
                continue;
            }
            let existing: IdempotencyRecord = serde_json::from_slice(&entry.value).map_err(unavailable)?;
            return Ok(if existing.fingerprint == record.fingerprint {
                Claim::Replay(existing)
            } else {
                Claim::Mismatch(existing)
            });
        }
        Err(IdempotencyError("idempotency key is contended; retry".into()))
    }

    /// Forgets `key` if it still holds `record` (the request was refused, so a retry should run again).
    pub async fn forget(&self, key: &str, record: &IdempotencyRecord) -> Result<(), IdempotencyError> {
        let kv = self.kv.kv();
        let Some(entry) = kv.entry(key).await.map_err(unavailable)? else { return Ok(()) };
        let ours = serde_json::from_slice::<IdempotencyRecord>(&entry.value).is_ok_and(|r| r == *record);
        if entry.operation == Operation::Put && ours {
            kv.delete_expect_revision(key, Some(entry.revision)).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

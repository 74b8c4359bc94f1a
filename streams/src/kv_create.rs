//! "Create this key unless it holds a value" on a KV bucket, the primitive behind name reservations and
//! idempotency keys. With group commit, concurrent creates go through a group committer of their own, as
//! one atomic batch on the bucket's stream (each keeps its expected sequence 0), so that under
//! `sync_interval: always` they share one fsync like the events do.

use std::sync::Arc;

use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{
        self,
        context::traits::TimeoutProvider,
        kv::{self, CreateErrorKind, Operation},
    },
};
use bytes::Bytes;

use crate::{
    group_commit::{self, Append, GroupCommitter, Sent},
    store::CommitMode,
};

/// Creates keys in one bucket, grouped or one by one.
#[derive(Clone)]
pub(crate) struct KvCreates {
    kv: kv::Store,
    /// with group commit: the context creates are sent on and their committer
    grouped: Option<(jetstream::Context, GroupCommitter)>,
}

impl std::fmt::Debug for KvCreates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCreates")
            .field("bucket", &self.kv.name)
            .field("grouped", &self.grouped.is_some())
            .finish()
    }
}

impl KvCreates {
    /// Creates in `kv`. With [`CommitMode::Grouped`] the bucket's stream must allow atomic publish
    /// (`Settings::apply` sets that), and a task is started on the current tokio runtime.
    pub(crate) fn new(kv: kv::Store, jetstream: &jetstream::Context, mode: CommitMode) -> Self {
        // A domain prefix on KV subjects is not modelled here: such buckets create one by one.
        let grouped = (mode == CommitMode::Grouped && !kv.use_jetstream_prefix).then(|| {
            (jetstream.clone(), GroupCommitter::start(jetstream.clone(), TimeoutProvider::timeout(jetstream)))
        });
        Self { kv, grouped }
    }

    /// The bucket.
    pub(crate) fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// Creates `key` with `value` unless it holds a value. `Ok(true)`: created (also over a delete
    /// marker); `Ok(false)`: the key holds a value (read it to see whose).
    pub(crate) async fn create(&self, key: &str, value: Bytes) -> Result<bool, String> {
        let Some((jetstream, committer)) = &self.grouped else {
            return match self.kv.create(key, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e.to_string()),
            };
        };
        let append = Append {
            subject: format!("{}{key}", self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix)),
            payload: value.clone(),
            headers: Arc::new(HeaderMap::new),
            message_id: HeaderValue::from(uuid::Uuid::now_v7().to_string().as_str()),
            expected: 0,
        };
        match group_commit::send(jetstream, Some(committer), append).await {
            Sent::Stored { .. } => Ok(true),
            // The key has a message: a value (someone's, or ours after a re-send) or a delete marker,
            // which is taken over as `kv::Store::create` does.
            Sent::Conflict { .. } => match self.kv.entry(key).await.map_err(|e| e.to_string())? {
                Some(entry) if entry.operation != Operation::Put => {
                    Ok(self.kv.update(key, value, entry.revision).await.is_ok())
                }
                _ => Ok(false),
            },
            Sent::Unknown => Err("no acknowledgement from JetStream".into()),
            Sent::Failed(e) => Err(e),
        }
    }
}

//! Instance names reserved per project in a KV bucket: the reservation is a KV create, which the server
//! makes atomic (of two concurrent creates of one key, one fails). With group commit, concurrent
//! reservations go through a group committer of their own, as one atomic batch on the bucket's stream
//! (each create keeps its expected sequence 0), so that they share one fsync like the events do.

use std::time::Duration;

use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{
        self,
        context::traits::TimeoutProvider,
        kv::{self, CreateErrorKind, Operation},
    },
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::{Lifecycle, NameRegistry, NameReservationError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    group_commit::{self, Append, GroupCommitter, Sent},
    instances::{InstanceStore, aggregate_id},
    store::CommitMode,
};

/// A reservation whose instance never got its first event is considered abandoned after this long
/// (the provision failed between reserving and appending).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Reservation {
    instance_id: Uuid,
    reserved_at: DateTime<Utc>,
}

/// [`NameRegistry`] on a KV bucket. A reservation whose holder is deprovisioning, or which is abandoned,
/// is taken over with a compare-and-set on its revision.
#[derive(Clone)]
pub struct KvNameRegistry {
    kv: kv::Store,
    instances: InstanceStore,
    /// with group commit: the context creates are sent on and their committer
    grouped: Option<(jetstream::Context, GroupCommitter)>,
}

impl std::fmt::Debug for KvNameRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvNameRegistry").finish_non_exhaustive()
    }
}

fn key(project: &str, name: &str) -> String {
    format!("{project}.{name}")
}

fn unavailable(e: impl std::fmt::Display) -> NameReservationError {
    NameReservationError::Unavailable(e.to_string())
}

impl KvNameRegistry {
    /// A registry on `kv` that checks holders in `instances`; with [`CommitMode::Grouped`] concurrent
    /// reservations share atomic batches (the bucket's stream must allow atomic publish; `Settings::apply`
    /// sets that) and a task is started on the current tokio runtime.
    pub fn new(
        kv: kv::Store,
        instances: InstanceStore,
        jetstream: &jetstream::Context,
        mode: CommitMode,
    ) -> Self {
        // A domain prefix on KV subjects is not modelled here: such buckets create one by one.
        let grouped = (mode == CommitMode::Grouped && !kv.use_jetstream_prefix).then(|| {
            (jetstream.clone(), GroupCommitter::start(jetstream.clone(), TimeoutProvider::timeout(jetstream)))
        });
        Self { kv, instances, grouped }
    }

    /// Creates `key` if it does not exist (nor is a delete marker). `Ok(false)`: it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<bool, NameReservationError> {
        let Some((jetstream, committer)) = &self.grouped else {
            return match self.kv.create(key, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(e)),
            };
        };
        let append = Append {
            subject: format!("{}{key}", self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix)),
            payload: value,
            headers: HeaderMap::new(),
            message_id: HeaderValue::from(Uuid::now_v7().to_string().as_str()),
            expected: 0,
        };
        match group_commit::send(jetstream, Some(committer), append).await {
            Sent::Stored { .. } => Ok(true),
            // Taken, a delete marker, or (after a re-send) our own create: the caller reads the entry.
            Sent::Conflict { .. } => Ok(false),
            Sent::Unknown => Err(unavailable("no acknowledgement from JetStream")),
            Sent::Failed(e) => Err(unavailable(e)),
        }
    }

    async fn holder_is_gone(
        &self,
        project: &str,
        holder: &Reservation,
    ) -> Result<bool, NameReservationError> {
        let (instance, version) =
            self.instances.load(&aggregate_id(project, holder.instance_id)).await.map_err(unavailable)?;
        Ok(match instance.lifecycle() {
            Lifecycle::Deprovisioning => true,
            Lifecycle::Absent => {
                version == 0
                    && Utc::now().signed_duration_since(holder.reserved_at).to_std().unwrap_or_default()
                        > ABANDONED_AFTER
            }
            Lifecycle::Active => false,
        })
    }

    /// Frees `name` if `instance` holds it.
    pub async fn release(
        &self,
        project: &str,
        name: &str,
        instance: Uuid,
    ) -> Result<(), NameReservationError> {
        let key = key(project, name);
        let Some(entry) = self.kv.entry(&key).await.map_err(unavailable)? else { return Ok(()) };
        let holder: Option<Reservation> = serde_json::from_slice(&entry.value).ok();
        if entry.operation == Operation::Put && holder.is_some_and(|h| h.instance_id == instance) {
            self.kv.delete_expect_revision(&key, Some(entry.revision)).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl NameRegistry for KvNameRegistry {
    async fn reserve(&self, project: &str, name: &str, instance: Uuid) -> Result<(), NameReservationError> {
        let key = key(project, name);
        let value = Bytes::from(
            serde_json::to_vec(&Reservation { instance_id: instance, reserved_at: Utc::now() })
                .map_err(unavailable)?,
        );
        // A few rounds: each lost race means someone else changed the key, so look again.
        for _ in 0..4 {
            if self.create(&key, value.clone()).await? {
                return Ok(());
            }
            let Some(entry) = self.kv.entry(&key).await.map_err(unavailable)? else { continue };
            if entry.operation != Operation::Put {
                // A released name (delete marker): take it over unless someone else does first.
                if self.kv.update(&key, value.clone(), entry.revision).await.is_ok() {
                    return Ok(());
                }
                continue;
            }
            let holder: Reservation = serde_json::from_slice(&entry.value).map_err(unavailable)?;
            if holder.instance_id == instance {
                return Ok(());
            }
            if !self.holder_is_gone(project, &holder).await? {
                return Err(NameReservationError::Taken { holder: holder.instance_id });
            }
            if self.kv.update(&key, value.clone(), entry.revision).await.is_ok() {
                return Ok(());
            }
        }
        Err(NameReservationError::Unavailable(format!("name {name:?} is contended; retry")))
    }
}

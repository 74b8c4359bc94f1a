//! Instance names reserved per project in a KV bucket: the reservation is a KV create, which the server
//! makes atomic (of two concurrent creates of one key, one fails); grouped with other reservations in
//! group commit mode ([`crate::kv_create`]).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{self, Operation},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::{Lifecycle, NameRegistry, NameReservationError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    instances::{InstanceStore, aggregate_id},
    kv_create::KvCreates,
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
    kv: KvCreates,
    instances: InstanceStore,
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
    /// reservations share atomic batches (see [`crate::kv_create`]).
    pub fn new(
        kv: kv::Store,
        instances: InstanceStore,
        jetstream: &jetstream::Context,
        mode: CommitMode,
    ) -> Self {
        Self { kv: KvCreates::new(kv, jetstream, mode), instances }
    }

    async fn holder_is_gone(
        &self,
        project: &str,
        holder: &Reservation,
    ) -> Result<bool, NameReservationError> {
        // From the stream, not the process cache: the cache may have remembered the holder as absent from
        // a look during its reserve → append window, and the holder would then lose a name it uses.
        let (instance, version) = self
            .instances
            .load_fresh(&aggregate_id(project, holder.instance_id))
            .await
            .map_err(unavailable)?;
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
        let kv = self.kv.kv();
        let Some(entry) = kv.entry(&key).await.map_err(unavailable)? else { return Ok(()) };
        let holder: Option<Reservation> = serde_json::from_slice(&entry.value).ok();
        if entry.operation == Operation::Put && holder.is_some_and(|h| h.instance_id == instance) {
            kv.delete_expect_revision(&key, Some(entry.revision)).await.map_err(unavailable)?;
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
        let kv = self.kv.kv();
        for _ in 0..4 {
            if self.kv.create(&key, value.clone()).await.map_err(unavailable)? {
                return Ok(());
            }
            let Some(entry) = kv.entry(&key).await.map_err(unavailable)? else { continue };
            if entry.operation != Operation::Put {
                continue;
            }
            let holder: Reservation = serde_json::from_slice(&entry.value).map_err(unavailable)?;
            if holder.instance_id == instance {
                return Ok(());
            }
            if !self.holder_is_gone(project, &holder).await? {
                return Err(NameReservationError::Taken { holder: holder.instance_id });
            }
            if kv.update(&key, value.clone(), entry.revision).await.is_ok() {
                return Ok(());
            }
        }
        Err(NameReservationError::Unavailable(format!("name {name:?} is contended; retry")))
    }
}

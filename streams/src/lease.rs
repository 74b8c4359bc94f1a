//! Leases: which replica of a singleton process leads, held in a KV bucket.
//!
//! A replica leads while it holds the key: it takes it with a create (refused while the key exists), and
//! keeps it with updates that name the revision it last wrote (refused once anyone else wrote since). The
//! bucket's `max_age` is the lease's time to live ([`crate::Settings::lease_ttl`]): a holder that dies
//! stops renewing, nats-server removes its last write when it is that old, and a standby's create then
//! succeeds. What makes this a lock and not a hint is that every write is conditional on the server
//! (JetStream's expected-last-subject-sequence), so two replicas can never both believe a renewal
//! succeeded; the holder's part is to stop working before its lease could have expired
//! (`projections::leader`).

use std::time::Duration;

use async_nats::jetstream::kv;

/// Failure to reach the leases bucket, or a write refused for another reason than a lost race.
#[derive(Debug, thiserror::Error)]
#[error("leases bucket: {0}")]
pub struct LeaseError(String);

/// One named lease, as one replica sees it.
#[derive(Debug, Clone)]
pub struct Lease {
    kv: kv::Store,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// The lease `name` of `topology`'s leases bucket, to be held by `holder` (a name for this replica).
    pub fn new(topology: &crate::Topology, name: &str, holder: &str) -> Self {
        Self {
            kv: topology.leases.clone(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl: topology.settings.lease_ttl,
        }
    }

    /// How long the lease lasts unless renewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// This replica's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if nobody holds it: the revision written, or `None` while another replica holds it.
    pub async fn acquire(&self) -> Result<Option<u64>, LeaseError> {
        match self.kv.create(&self.name, self.holder.clone().into()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(LeaseError(e.to_string())),
        }
    }

    /// Renews the lease last written at `revision`: the new revision, or `None` if another replica wrote
    /// since (this one lost it).
    pub async fn renew(&self, revision: u64) -> Result<Option<u64>, LeaseError> {
        match self.kv.update(&self.name, self.holder.clone().into(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(LeaseError(e.to_string())),
        }
    }

    /// Gives the lease up (a clean shutdown), if this replica still holds it at `revision`, so a standby
    /// need not wait for it to expire.
    pub async fn release(&self, revision: u64) -> Result<(), LeaseError> {
        self.kv
            .delete_expect_revision(&self.name, Some(revision))
            .await
            .map_err(|e| LeaseError(e.to_string()))
    }

    /// Who holds the lease now, if anyone.
    pub async fn current_holder(&self) -> Result<Option<String>, LeaseError> {
        let entry = self.kv.entry(&self.name).await.map_err(|e| LeaseError(e.to_string()))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}

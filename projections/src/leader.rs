//! Leading: runs a singleton's work (the projector, the intake gate, the liveness watch, the backup
//! scheduler and worker) in exactly one replica at a time, through a lease (`streams::lease`).
//!
//! Why a lease in NATS KV rather than JetStream consumer exclusivity: the work is five tasks, not one
//! consumer (the gate reads one consumer per cluster, the scheduler reads the read models, the worker
//! the store), and they must change hands together; the lease needs nothing but the NATS the control plane
//! already runs, and its expiry is the server's, not a client's clock.
//!
//! A standby asks for the lease every [`POLL`]; the leader renews it every third of its time to live and
//! **stops its work before the lease could have expired**: when a renewal is refused (another replica
//! holds it), fails, or has not succeeded for two thirds of the time to live. The work is then dropped
//! (its tasks aborted) before anyone else can take over, so no two replicas ever work at once, and the
//! replica stands by again. Work that stops by itself gives the lease up at once.

use std::{future::Future, time::Duration};

use streams::lease::Lease;
use tokio::sync::watch;

/// How often a standby asks for the lease.
pub const POLL: Duration = Duration::from_millis(500);

/// Runs `work` whenever this replica holds `lease`, for ever; `leading` says whether it does now.
pub async fn lead<W, F>(lease: Lease, mut work: W, leading: watch::Sender<bool>)
where
    W: FnMut() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let ttl = lease.ttl();
    let renew_every = ttl / 3;
    // The work stops once no renewal succeeded for this long: a third of the time to live before
    // nats-server could remove the last one.
    let give_up_after = ttl * 2 / 3;
    loop {
        let revision = match lease.acquire().await {
            Ok(Some(revision)) => revision,
            Ok(None) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot ask for the lease");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        tracing::info!(holder = lease.holder(), "leading");
        let _ = leading.send(true);
        // Dropping the set aborts the work: on stepping down, and if this future is dropped.
        let mut working = tokio::task::JoinSet::new();
        working.spawn(work());
        let mut revision = revision;
        let mut renewed = tokio::time::Instant::now();
        let why = loop {
            tokio::select! {
                _ = working.join_next() => {
                    let _ = lease.release(revision).await;
                    break "the work stopped";
                }
                () = tokio::time::sleep(renew_every) => {}
            }
            let left = give_up_after.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, lease.renew(revision)).await {
                Ok(Ok(Some(next))) => {
                    revision = next;
                    renewed = tokio::time::Instant::now();
                }
                Ok(Ok(None)) => break "another replica holds the lease",
                Ok(Err(error)) if renewed.elapsed() < give_up_after => {
                    tracing::warn!(%error, "renewing the lease failed; trying again");
                }
                Ok(Err(_)) | Err(_) => break "the lease could not be renewed in time",
            }
        };
        // Aborted and waited for, so nothing of it runs once this replica says it stands by.
        working.shutdown().await;
        let _ = leading.send(false);
        tracing::warn!(holder = lease.holder(), reason = why, "standing by");
    }
}

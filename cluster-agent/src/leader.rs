//! One converging agent per cluster: replicas elect a leader through a `coordination.k8s.io/v1` Lease,
//! the way client-go's `leaderelection` does (k8s.io/client-go v0.36.1 `tools/leaderelection/
//! leaderelection.go`, `tryAcquireOrRenew`; `resourcelock/leaselock.go`):
//!
//! - A candidate takes the Lease when nobody holds it, or when the record it last saw has not changed for
//!   a whole `lease_duration` *by its own clock* (`observed_at`): no clock of another machine is trusted,
//!   only the time this process saw the record change. Writes carry the record's `resourceVersion`, so of
//!   two candidates only one replaces it; the other gets 409 Conflict.
//! - The leader renews every `retry_period`. It counts as leading only until `renew_deadline` after the
//!   start of its last successful renewal (by its monotonic clock); past that it stops everything it
//!   runs at once (fencing), before any standby may take over: a standby waits `lease_duration` after it
//!   *saw* that renewal, which it saw after it was sent, and `renew_deadline < lease_duration`.
//!
//! Hand-written rather than `kube-lease-manager` (0.13.1): that crate reports the loss of a lease only
//! when it observes another holder, so a leader cut off from the API server would keep its controllers
//! running and write the moment the connection heals, after a standby had taken over; and it would add
//! a second `rand` to the build.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt as _},
};
use tokio::time::Instant;

/// The Lease's name.
pub const LEASE_NAME: &str = "cp-cluster-agent";

/// How the replicas of one cluster's agent elect their leader.
#[derive(Debug, Clone)]
pub struct Election {
    /// the Lease's namespace (the agent's own)
    pub namespace: String,
    /// the Lease's name
    pub name: String,
    /// this replica's identity (its pod's name and a process id)
    pub identity: String,
    /// how long a standby waits after it last saw the record change before it takes over
    pub lease_duration: Duration,
    /// how long after the start of its last successful renewal the leader stops (< `lease_duration`)
    pub renew_deadline: Duration,
    /// how often the leader renews and a standby tries
    pub retry_period: Duration,
}

impl Election {
    /// client-go's defaults for controllers (15 s, 10 s, 2 s), for `identity` in `namespace`.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The record as this candidate last saw it, and when (its own clock).
#[derive(Debug, Default)]
struct Observed {
    record: Option<(String, Option<MicroTime>, String)>,
    at: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Election {
    /// One attempt to take or renew the Lease: whether this replica holds it afterwards.
    async fn try_acquire_or_renew(
        &self,
        api: &Api<Lease>,
        observed: &mut Observed,
    ) -> Result<bool, kube::Error> {
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = (holder.clone(), spec.renew_time.clone(), lease.resource_version().unwrap_or_default());
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record);
            observed.at = Some(Instant::now());
        }
        let held_by_other = !holder.is_empty() && holder != self.identity;
        let unexpired = observed.at.is_some_and(|at| at.elapsed() < self.lease_duration);
        if held_by_other && unexpired {
            return Ok(false);
        }
        let mut next = spec;
        if holder != self.identity {
            next.acquire_time = Some(now());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(seconds);
        next.renew_time = Some(now());
        lease.spec = Some(next);
        // `metadata.resourceVersion` is the record read above: a concurrent writer makes this a 409.
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs `work` while this replica leads, for ever: waits to take the Lease, runs a fresh `work()`,
    /// renews; stops it (drops it, which aborts what it spawned in a `JoinSet`) the moment leadership
    /// cannot be confirmed, and waits to lead again. `leading` follows whether `work` runs. Returns only
    /// when `work` itself ends (an error of one of its parts).
    pub async fn lead<F, Fut>(
        &self,
        client: Client,
        leading: tokio::sync::watch::Sender<bool>,
        mut work: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut observed = Observed::default();
        loop {
            // A standby: try every retry period until the Lease is ours.
            let mut deadline = loop {
                let started = Instant::now();
                match self.try_acquire_or_renew(&api, &mut observed).await {
                    Ok(true) => break started + self.renew_deadline,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, lease = %self.name, "reading the agents' Lease failed")
                    }
                }
                tokio::time::sleep(self.retry_period).await;
            };
            tracing::info!(identity = %self.identity, lease = %self.name, "leading: converging this cluster");
            leading.send_replace(true);
            // Boxed, so dropping it drops (and aborts) everything the term runs.
            let mut running = Box::pin(work());
            let mut next_renewal = Instant::now() + self.retry_period;
            let lost = loop {
                tokio::select! {
                    ended = running.as_mut() => {
                        leading.send_replace(false);
                        return ended;
                    }
                    () = tokio::time::sleep_until(deadline) => break "no renewal within the renew deadline",
                    () = tokio::time::sleep_until(next_renewal) => {
                        let started = Instant::now();
                        let renewed = tokio::time::timeout_at(deadline, self.try_acquire_or_renew(&api, &mut observed)).await;
                        match renewed {
                            Ok(Ok(true)) => deadline = started + self.renew_deadline,
                            Ok(Ok(false)) => break "another replica holds the Lease",
                            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the agents' Lease failed; retrying until the renew deadline"),
                            Err(_) => break "no renewal within the renew deadline",
                        }
                        next_renewal = Instant::now() + self.retry_period;
                    }
                }
            };
            // Fencing: everything the term started stops here, before a standby may take over.
            drop(running);
            leading.send_replace(false);
            tracing::warn!(identity = %self.identity, reason = lost, "stopped leading");
        }
    }
}

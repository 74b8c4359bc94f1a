//! Agent metrics (OpenMetrics text at `/metrics`).

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Counters and histograms of one agent.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// reconciles completed so far, as a value one can wait on (`subscribe().wait_for(..)`): progress
    /// without polling a counter
    pub reconciled: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// reconciles run
    pub reconciles: Counter,
    /// reconciles that failed
    pub reconcile_errors: Counter,
    /// Kubernetes API requests made by the agent (all, including watches)
    pub kube_requests: Counter,
    /// of those, writes (every method but GET: creates, patches, deletes)
    pub kube_writes: Counter,
    /// Kubernetes API requests made by one reconcile (writes and deletes; reads come from watch caches)
    pub requests_per_reconcile: Histogram,
    /// ManagedInstance writes by the mirror
    pub mirror_writes: Counter,
    /// observed-state events published
    pub observed_events: Counter,
    /// instance events received from NATS
    pub events_received: Counter,
    /// instance event messages skipped because they could not be decoded (at start-up or from the consumer)
    pub undecodable_events: Counter,
    /// reconciles that put back objects edited or deleted outside the control plane
    pub drift_healed: Counter,
    /// ManagedInstances of active instances that were deleted and restored with their data untouched
    pub mirrors_restored: Counter,
    /// 1 while this replica leads its cluster's agents and converges, else 0
    pub leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciled: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            kube_requests: Counter::default(),
            kube_writes: Counter::default(),
            requests_per_reconcile: Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0]),
            mirror_writes: Counter::default(),
            observed_events: Counter::default(),
            events_received: Counter::default(),
            undecodable_events: Counter::default(),
            drift_healed: Counter::default(),
            mirrors_restored: Counter::default(),
            leading: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `cp_agent` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("cp_agent");
        r.register("reconciles", "Reconciles run", self.reconciles.clone());
        r.register("reconcile_errors", "Reconciles that failed", self.reconcile_errors.clone());
        r.register("kube_requests", "Kubernetes API requests made", self.kube_requests.clone());
        r.register(
            "kube_writes",
            "Kubernetes API writes made (creates, patches, deletes)",
            self.kube_writes.clone(),
        );
        r.register(
            "requests_per_reconcile",
            "Kubernetes API writes per reconcile",
            self.requests_per_reconcile.clone(),
        );
        r.register("mirror_writes", "ManagedInstance writes by the mirror", self.mirror_writes.clone());
        r.register("observed_events", "Observed-state events published", self.observed_events.clone());
        r.register("events_received", "Instance event messages received", self.events_received.clone());
        r.register(
            "undecodable_events",
            "Instance event messages skipped because they could not be decoded",
            self.undecodable_events.clone(),
        );
        r.register(
            "drift_healed",
            "Reconciles that put back objects changed outside the control plane",
            self.drift_healed.clone(),
        );
        r.register(
            "mirrors_restored",
            "ManagedInstances of active instances deleted by hand and restored, data untouched",
            self.mirrors_restored.clone(),
        );
        r.register(
            "leading",
            "1 while this replica holds its cluster's agent Lease and converges, else 0",
            self.leading.clone(),
        );
        self
    }
}

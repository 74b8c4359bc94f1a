//! The intake gate: moves each registered cluster's facts from its intake (`streams::intake`) onto the
//! event stream, in order, each once, at a bounded rate per cluster.
//!
//! The rate is what keeps one cluster from growing the event stream (which is never purged) faster than
//! an honest fleet would, and from burying the projector: a taken-over agent that floods fills its own
//! intake, whose limits then refuse its publishes, and its facts reach the event stream no faster than
//! [`IntakeLimits::per_second`]. Other clusters have gates and budgets of their own.
//!
//! Only the headers the control plane's readers use are carried over; an agent cannot slip in
//! JetStream's own (`Nats-Rollup`, `Nats-Expected-…`, batch headers) to act on the event stream. A fact's
//! `Nats-Msg-Id` (an agent's report of a backup's outcome, sent again after a restart) is kept, within
//! the cluster's own namespace, so JetStream still drops the repeat without one cluster being able to
//! suppress another's messages. The projector checks every fact against its subject as before
//! ([`crate::facts`]).
//!
//! Heartbeats (`streams::liveness`) are taken off here and recorded in the liveness bucket instead: they
//! are current facts, not history.
//!
//! One gate per cluster at a time: it handles its consumer's messages one after the other and
//! acknowledges each only once the event stream has stored it, so after a crash the unacknowledged one
//! is delivered again, before any later one (the consumer has one outstanding at a time,
//! `streams::intake::gate_consumer`), and the event stream's duplicate window drops it if it was already
//! stored.

use std::{collections::HashSet, num::NonZeroU32, sync::Arc, time::Duration};

use async_nats::{HeaderMap, jetstream};
use futures::StreamExt as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use streams::{Settings, clusters::ClusterRegistry, headers, intake};

/// How fast one cluster's facts may enter the event stream.
#[derive(Debug, Clone, Copy)]
pub struct IntakeLimits {
    /// facts per second, sustained
    pub per_second: NonZeroU32,
    /// facts at once after a quiet spell (a thousand instances reporting after an agent's restart)
    pub burst: NonZeroU32,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(200).expect("nonzero"),
            burst: NonZeroU32::new(2_000).expect("nonzero"),
        }
    }
}

/// The label of the gate's metrics: the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClusterLabels {
    /// the cluster whose facts these are
    pub cluster: String,
}

/// The gate's metrics, per cluster.
#[derive(Debug, Clone, Default)]
pub struct IntakeMetrics {
    /// facts moved onto the event stream
    pub moved: Family<ClusterLabels, Counter>,
    /// facts that had to wait for the cluster's rate
    pub throttled: Family<ClusterLabels, Counter>,
    /// messages on intake subjects that are no fact of that cluster, dropped
    pub dropped: Family<ClusterLabels, Counter>,
    /// facts waiting in the cluster's intake, as of the last one handled
    pub waiting: Family<ClusterLabels, Gauge>,
    /// facts the event stream had already stored (delivered again after a gate's restart)
    pub duplicates: Family<ClusterLabels, Counter>,
}

impl IntakeMetrics {
    /// Registers every metric under the `cp_intake` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("cp_intake");
        r.register(
            "moved_facts",
            "Facts moved from a cluster's intake onto the event stream",
            self.moved.clone(),
        );
        r.register("throttled_facts", "Facts that waited for their cluster's rate", self.throttled.clone());
        r.register(
            "dropped_messages",
            "Messages on a cluster's intake that were no fact of it",
            self.dropped.clone(),
        );
        r.register("waiting_facts", "Facts waiting in a cluster's intake", self.waiting.clone());
        r.register(
            "duplicate_facts",
            "Facts the event stream had already stored when the gate moved them",
            self.duplicates.clone(),
        );
        self
    }

    fn label(cluster: &str) -> ClusterLabels {
        ClusterLabels { cluster: cluster.to_owned() }
    }
}

/// The headers a fact keeps on its way to the event stream (see the module's comment).
const CARRIED_HEADERS: [&str; 4] =
    [headers::EVENT_TYPE, headers::SCHEMA_VERSION, headers::ACTOR, headers::TIME];

/// Moves every registered cluster's facts, starting a gate for each cluster as it is registered; runs
/// until the task is dropped.
pub async fn run(
    jetstream: jetstream::Context,
    settings: Settings,
    clusters: ClusterRegistry,
    limits: IntakeLimits,
    metrics: IntakeMetrics,
) {
    let mut running = HashSet::new();
    let mut gates = tokio::task::JoinSet::new();
    loop {
        for cluster in clusters.list() {
            if running.insert(cluster.name.clone()) {
                let limiter = Arc::new(RateLimiter::direct(
                    Quota::per_second(limits.per_second).allow_burst(limits.burst),
                ));
                gates.spawn(gate(
                    jetstream.clone(),
                    settings.clone(),
                    cluster.name,
                    limiter,
                    metrics.clone(),
                ));
            }
        }
        // A cluster registered later gets its gate within a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One cluster's gate: moves its facts for ever, starting again after any failure (NATS away, the
/// intake not made yet).
async fn gate(
    jetstream: jetstream::Context,
    settings: Settings,
    cluster: String,
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: IntakeMetrics,
) {
    loop {
        if let Err(error) = move_facts(&jetstream, &settings, &cluster, &limiter, &metrics).await {
            tracing::warn!(%cluster, %error, "intake gate stopped; starting again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn move_facts(
    jetstream: &jetstream::Context,
    settings: &Settings,
    cluster: &str,
    limiter: &DefaultDirectRateLimiter,
    metrics: &IntakeMetrics,
) -> Result<(), async_nats::Error> {
    let label = IntakeMetrics::label(cluster);
    let liveness = streams::liveness::LivenessBucket::open(jetstream, settings).await?;
    let stream = jetstream.get_stream(intake::stream_name(cluster)).await?;
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer(intake::GATE_CONSUMER).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info()?;
        metrics.waiting.get_or_create(&label).set(i64::try_from(info.pending).unwrap_or(i64::MAX));
        let sequence = info.stream_sequence;
        // A heartbeat is recorded as the cluster's liveness, never moved onto the event stream
        // (`streams::liveness`); dated by the intake's clock.
        if let Some(beating) = streams::liveness::heartbeat_of(&message.subject) {
            match serde_json::from_slice::<streams::liveness::Heartbeat>(&message.payload) {
                Ok(heartbeat) if beating == cluster => {
                    liveness.record_heartbeat(cluster, heartbeat, streams::history::stored_at(&info)).await?;
                }
                _ => {
                    metrics.dropped.get_or_create(&label).inc();
                }
            }
            message.ack().await?;
            continue;
        }
        // The intake's subjects are its cluster's (`streams::intake::cluster_filter`), and the account
        // import maps only that cluster's `cp.obs` onto them; anything else is dropped, not moved.
        let Some(subject) = intake::observed_subject_of(&message.subject)
            .filter(|s| streams::observed::parse_observed_subject(s).is_some_and(|o| o.source == cluster))
        else {
            metrics.dropped.get_or_create(&label).inc();
            message.ack_with(jetstream::AckKind::Term).await?;
            continue;
        };
        if limiter.check().is_err() {
            metrics.throttled.get_or_create(&label).inc();
            limiter.until_ready().await;
        }
        let mut carried = HeaderMap::new();
        if let Some(original) = &message.headers {
            for name in CARRIED_HEADERS {
                if let Some(value) = original.get(name) {
                    carried.insert(name, value.as_str());
                }
            }
        }
        let id = match message.headers.as_ref().and_then(|h| h.get(headers::MSG_ID)) {
            Some(id) => format!("intake-{cluster}-{id}"),
            None => format!("intake-{cluster}-{sequence}"),
        };
        carried.insert(headers::MSG_ID, id.as_str());
        let ack = store(jetstream, &settings.events_stream, &message, subject, carried).await;
        tracing::debug!(
            target: "cp_facts",
            %cluster,
            intake_sequence = sequence,
            event_sequence = ack.sequence,
            duplicate = ack.duplicate,
            "fact moved"
        );
        if ack.duplicate {
            // The same fact delivered again (the gate restarted before its acknowledgement) is expected;
            // counted, because a duplicate of a fact never stored would be a fact lost.
            metrics.duplicates.get_or_create(&label).inc();
            tracing::info!(%cluster, id, intake_sequence = sequence, event_sequence = ack.sequence, "fact already stored");
        }
        message.ack().await?;
        metrics.moved.get_or_create(&label).inc();
    }
    Ok(())
}

/// Publishes to the event stream until it is stored: the fact stays unacknowledged in the intake, and
/// later facts of the cluster wait behind it, so none overtakes another. Returns the stream's
/// acknowledgement.
async fn store(
    jetstream: &jetstream::Context,
    events_stream: &str,
    fact: &jetstream::Message,
    subject: String,
    headers: HeaderMap,
) -> jetstream::publish::PublishAck {
    let mut delay = Duration::from_millis(50);
    loop {
        let stored = match jetstream
            .publish_with_headers(subject.clone(), headers.clone(), fact.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map_err(async_nats::Error::from),
            Err(e) => Err(e.into()),
        };
        match stored {
            Ok(ack) => return ack,
            Err(error) => {
                tracing::warn!(%subject, stream = events_stream, %error, "a fact could not be stored yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                // Still working on it: the intake keeps the fact ours for another `GATE_ACK_WAIT` before
                // the next attempt (the first needs no word: it starts at delivery, and a publish times out
                // in 5 s). A failed word is no reason to stop trying; at worst another gate gets the fact,
                // and the event stream's duplicate window drops one of the two stores.
                let _ = fact.ack_with(jetstream::AckKind::Progress).await;
            }
        }
    }
}

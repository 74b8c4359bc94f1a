//! Where a cluster's facts wait before they enter the event stream: one bounded stream per cluster.
//!
//! An agent publishes its facts on `cp.obs.<cluster>.…` in its own account; the import of its account
//! maps that to `cp.intake.<cluster>.…` in the control plane's account ([`crate::accounts`]), where the
//! stream `CP_INTAKE_<cluster>` holds them until the projector's intake gate
//! (`projections::intake`) moves them, at a bounded rate per cluster, onto `cp.obs.<cluster>.…` of the
//! event stream, in order, each once.
//!
//! Why: the event stream keeps everything forever and may not be purged, so an agent that could write
//! into it directly could fill the disk under every tenant, or bury the projector under its messages
//! (the threat model assumes a cluster and its agent's credentials can be taken over). Here it fills
//! only its own intake: the stream is a work queue limited in messages and bytes that refuses new
//! messages when full (`discard: new`), so a flooding agent's publishes are refused, counted by the
//! server and seen by the agent, while every other cluster's facts go on as before; and the gate's rate
//! bounds how fast any one cluster can grow the event stream. Nothing acknowledged is lost: a fact is
//! acknowledged to the agent once stored here, and removed from here only once the event stream has
//! stored it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::{Settings, TopologyError, topology::OBSERVED_PREFIX};

/// Prefix of the intake subjects: `cp.intake.<cluster>.<project>.<instance-id>`.
pub const INTAKE_PREFIX: &str = "cp.intake";

/// Name of the durable consumer through which the gate reads each intake.
pub const GATE_CONSUMER: &str = "cp-intake-gate";

/// Name of `cluster`'s intake stream.
pub fn stream_name(cluster: &str) -> String {
    format!("CP_INTAKE_{cluster}")
}

/// Subjects of `cluster`'s intake.
pub fn cluster_filter(cluster: &str) -> String {
    format!("{INTAKE_PREFIX}.{cluster}.>")
}

/// The event-stream subject an intake subject's fact goes to: `cp.intake.<cluster>.…` →
/// `cp.obs.<cluster>.…`. `None` for any other subject.
pub fn observed_subject_of(intake_subject: &str) -> Option<String> {
    let rest = intake_subject.strip_prefix(INTAKE_PREFIX)?.strip_prefix('.')?;
    Some(format!("{OBSERVED_PREFIX}.{rest}"))
}

/// Configuration of `cluster`'s intake: a work queue of at most [`Settings::intake_max_messages`]
/// messages and [`Settings::intake_max_bytes`] bytes that refuses what does not fit.
pub fn stream_config(settings: &Settings, cluster: &str) -> stream::Config {
    stream::Config {
        name: stream_name(cluster),
        description: Some(format!("Facts of cluster {cluster}'s agent on their way to the event stream")),
        subjects: vec![cluster_filter(cluster)],
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages: settings.intake_max_messages,
        max_bytes: settings.intake_max_bytes,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        max_message_size: settings.max_message_bytes,
        // An agent that reports a backup's outcome again after a restart is deduplicated here as it was
        // by the event stream (`crate::observed` sets the ids).
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    }
}

/// How long the gate may hold a fact without a word before the intake gives it to another gate. The gate
/// says it is still working (`AckKind::Progress`) before each new attempt to store it, so this bounds only
/// how long the facts of a cluster wait after a gate died holding one (its projector lost its lease or
/// its process).
pub const GATE_ACK_WAIT: Duration = Duration::from_secs(10);

/// The gate's durable consumer on an intake: every message, one at a time, acknowledged once the event
/// stream has stored it.
///
/// One at a time (`max_ack_pending: 1`) is what keeps a cluster's facts in order across a gate's
/// failover: with more outstanding, the intake gives the next gate newer facts while the dead gate's are
/// still pending, and delivers those again only after [`GATE_ACK_WAIT`], behind the newer ones (seen in
/// `tests/tests/three_nodes.rs`: reports of older generations stored last). With one, the next
/// gate gets nothing until the dead gate's fact is delivered to it again, first.
pub fn gate_consumer() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(GATE_CONSUMER.to_owned()),
        description: Some("moves facts into the event stream (projections::intake)".to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: GATE_ACK_WAIT,
        max_ack_pending: 1,
        ..Default::default()
    }
}

/// Creates or updates `cluster`'s intake and its gate's consumer. Safe to run at every start and every
/// registration.
pub async fn apply(
    jetstream: &jetstream::Context,
    settings: &Settings,
    cluster: &str,
) -> Result<stream::Stream, TopologyError> {
    let name = stream_name(cluster);
    let failed = |source: async_nats::Error| TopologyError::Stream { name: name.clone(), source };
    let stream = jetstream
        .create_or_update_stream(stream_config(settings, cluster))
        .await
        .map_err(|e| failed(e.into()))?;
    let stream = jetstream.get_stream(stream.config.name).await.map_err(|e| failed(e.into()))?;
    stream.create_consumer(gate_consumer()).await.map_err(|e| failed(e.into()))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intake_subject_maps_to_the_same_cluster_s_observed_subject_only() {
        assert_eq!(observed_subject_of("cp.intake.eu-1.acme.7c3e").as_deref(), Some("cp.obs.eu-1.acme.7c3e"));
        assert_eq!(observed_subject_of("cp.evt.eu-1.acme.7c3e"), None);
        assert_eq!(observed_subject_of("cp.intakeX.eu-1.acme"), None);
    }
}

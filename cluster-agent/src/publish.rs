//! Observed-state events to `cp.obs.<cluster>.<project>.<instance-id>`: the only thing the agent writes to
//! JetStream.

use chrono::{SecondsFormat, Utc};
use domain::observed::{OBSERVED_EVENT_VERSION, ObservedEvent};
use serde_json::json;

use crate::{AgentConfig, Error, Result};

/// The instance an event is about, as the ManagedInstance names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct About<'a> {
    pub(crate) project: &'a str,
    pub(crate) instance_id: uuid::Uuid,
    pub(crate) desired_generation: u64,
}

/// Publishes an observed-state event on the instance's observed subject and waits for JetStream's ack.
pub(crate) async fn publish(
    config: &AgentConfig,
    jetstream: &async_nats::jetstream::Context,
    about: About<'_>,
    event: ObservedEvent,
) -> Result<()> {
    let subject = streams::instances::observed_subject(&config.cluster, about.project, about.instance_id);
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let payload = json!({
        "cluster": config.cluster, "project": about.project, "instance_id": about.instance_id,
        "desired_generation": about.desired_generation, "schema": OBSERVED_EVENT_VERSION,
        "time": time, "event": event,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(streams::headers::EVENT_TYPE, event.type_name());
    headers.insert(streams::headers::SCHEMA_VERSION, OBSERVED_EVENT_VERSION);
    headers.insert(streams::headers::ACTOR, format!("cluster-agent/{}", config.cluster).as_str());
    headers.insert(streams::headers::TIME, time.as_str());
    let body = serde_json::to_vec(&payload)?;
    jetstream
        .publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|e| Error::Nats(e.to_string()))?
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    config.metrics.observed_events.inc();
    Ok(())
}

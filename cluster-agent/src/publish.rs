//! Observed-state events to `cp.obs.<cluster>.<project>.<instance-id>`: the only thing the agent writes to
//! JetStream.

use domain::observed::ObservedEvent;
use streams::observed::ObservedMessage;

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
    let message = ObservedMessage::new(
        &config.cluster,
        about.project,
        about.instance_id,
        about.desired_generation,
        event,
    );
    message.publish(jetstream).await.map_err(Error::Nats)?;
    config.metrics.observed_events.inc();
    Ok(())
}

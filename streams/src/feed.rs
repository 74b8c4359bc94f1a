//! The live feed's reading of the event stream: a project's instance events and observed-state events,
//! in stream order, from a sequence on.

use async_nats::jetstream::{
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::Stream,
};

use crate::instances::{observed_project_filter, project_filter};

/// Why the feed could not be followed.
#[derive(Debug, thiserror::Error)]
#[error("event feed unavailable: {0}")]
pub struct FeedError(String);

/// Follows `project`'s messages with an ordered consumer (ephemeral, server-side filters): from just after
/// stream sequence `after`, or only new ones.
pub async fn follow_project(
    events: &Stream,
    project: &str,
    after: Option<u64>,
) -> Result<async_nats::jetstream::consumer::pull::Ordered, FeedError> {
    let deliver_policy = match after {
        Some(after) => DeliverPolicy::ByStartSequence { start_sequence: after.saturating_add(1) },
        None => DeliverPolicy::New,
    };
    let consumer = events
        .create_consumer(OrderedConfig {
            filter_subjects: vec![project_filter(project), observed_project_filter(project)],
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| FeedError(e.to_string()))?;
    consumer.messages().await.map_err(|e| FeedError(e.to_string()))
}

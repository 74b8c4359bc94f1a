//! The store as a cqrs-es `EventStore`, for code that drives aggregates through cqrs-es itself.

use std::collections::HashMap;

use cqrs_es::{EventEnvelope, EventStore};

use super::{JetStreamContext, JetStreamStore, StoreError, StreamAggregate};
use crate::envelope::CommandMetadata;

impl<A: StreamAggregate> EventStore<A> for JetStreamStore<A> {
    type AC = JetStreamContext<A>;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<A>>, StoreError<A>> {
        Ok(self
            .history(aggregate_id)
            .await?
            .into_iter()
            .map(|(version, payload, metadata)| EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence: version as usize,
                payload,
                metadata: metadata.to_map(),
            })
            .collect())
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<JetStreamContext<A>, StoreError<A>> {
        self.lock(aggregate_id).await
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: JetStreamContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError<A>> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let first = context.version + 1;
        let aggregate_id = context.aggregate_id.clone();
        let meta = CommandMetadata::from_map(&metadata);
        self.append(&events, context, meta.clone()).await?;
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| EventEnvelope {
                aggregate_id: aggregate_id.clone(),
                sequence: (first + i as u64) as usize,
                payload,
                metadata: meta.to_map(),
            })
            .collect())
    }
}

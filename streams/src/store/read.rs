//! Reading aggregates without running a command: the current state for a reader that must not lag its
//! own writes, where a command landed, and an aggregate's whole history.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};

use super::{Current, JetStreamStore, Landed, Replica, StoreError, StreamAggregate, corrupt, unavailable};
use crate::envelope::{CommandMetadata, EventBatch};

impl<A: StreamAggregate> JetStreamStore<A> {
    /// The aggregate as every write acknowledged before this call left it, read from the stream (its
    /// subject's last message, from the leader when the stream is replicated) without taking its lock or touching the cache: for reads
    /// that must not lag the reader's own writes, such as a GET whose ETag feeds an `If-Match`. `None` when
    /// the aggregate has no events.
    pub async fn read_current(&self, aggregate_id: &str) -> Result<Option<Current<A>>, StoreError<A>> {
        let loaded = self.fetch(aggregate_id, Replica::Leader).await?;
        if loaded.version == 0 {
            return Ok(None);
        }
        Ok(Some(Current {
            aggregate: loaded.aggregate,
            version: loaded.version,
            sequence: loaded.last_sequence,
            updated_at: loaded.updated_at,
        }))
    }

    /// Where command `command_id` landed on an aggregate's subject, if it did, looking no further back
    /// than `not_before` (when the command was first asked for; a minute's clock skew is allowed). For
    /// answering a retried request whose first attempt may have landed while the read models lag.
    pub async fn find_command(
        &self,
        aggregate_id: &str,
        command_id: uuid::Uuid,
        not_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Landed>, StoreError<A>> {
        let Some(last) = self.last_message(aggregate_id, Replica::Leader).await? else { return Ok(None) };
        let landed = |batch: &EventBatch, sequence| Landed {
            version: batch.last_version(),
            sequence,
            time: batch.metadata.time,
        };
        let batch = EventBatch::from_slice(&last.payload).map_err(corrupt::<A>)?;
        if batch.metadata.command_id == command_id {
            return Ok(Some(landed(&batch, last.sequence)));
        }
        let from = not_before - chrono::TimeDelta::minutes(1);
        let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(
            from.timestamp_nanos_opt().unwrap_or_default().into(),
        )
        .map_err(unavailable::<A>)?;
        let config = OrderedConfig {
            filter_subject: last.subject.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        };
        let mut found = None;
        self.scan(config, |sequence, batch| {
            if batch.metadata.command_id == command_id {
                found = Some(landed(&batch, sequence));
            }
            Ok(found.is_none())
        })
        .await?;
        Ok(found)
    }

    /// Every event of an aggregate with its version and metadata, in order (for audits and tests).
    pub async fn history(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<(u64, A::Event, CommandMetadata)>, StoreError<A>> {
        let Some(last) = self.last_message(aggregate_id, Replica::Leader).await? else { return Ok(vec![]) };
        Ok(self.replay(last.subject.as_str(), aggregate_id).await?.1)
    }
}

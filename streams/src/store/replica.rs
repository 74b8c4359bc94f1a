//! Which server answers a read of the stream: any current replica (a direct get) or the leader.
//!
//! Direct gets are answered by any replica that is current, which on a replicated stream may still miss
//! the last few acknowledged messages (nats-server `server/stream.go`, `processDirectGetRequest`; ADR-31
//! "Direct Get": "may return stale data"); the leader's `STREAM.MSG.GET` cannot. With one replica the two
//! are the same server, and the direct get is the cheaper.

use async_nats::jetstream::{
    self,
    stream::{DirectGetError, DirectGetErrorKind, LastRawMessageErrorKind},
};

use super::{JetStreamStore, StoreError, StreamAggregate, unavailable};

/// Which server may answer a read of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replica {
    /// any current replica (a direct get): for loads a command's expected-sequence check guards, where
    /// a stale read costs one retry.
    Any,
    /// the stream's leader: for reads that must see every acknowledged write.
    Leader,
}

impl<A: StreamAggregate> JetStreamStore<A> {
    /// The last message of an aggregate's subject, whatever its partition; `None` when the aggregate has
    /// no events.
    pub(super) async fn last_message(
        &self,
        aggregate_id: &str,
        from: Replica,
    ) -> Result<Option<jetstream::message::StreamMessage>, StoreError<A>> {
        self.ensure_connected()?;
        let pattern = format!("{}.*.{aggregate_id}", self.inner.prefix);
        let stream = &self.inner.stream;
        if self.direct_reads(from) {
            match stream.direct_get_last_for_subject(pattern.as_str()).await {
                Ok(message) => return Ok(Some(message)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) if !no_direct_responder(&e) => return Err(unavailable::<A>(e)),
                Err(_) => {}
            }
        }
        match stream.get_last_raw_message_by_subject(&pattern).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable::<A>(e)),
        }
    }

    /// The first message of `subject` at or after stream sequence `from_sequence`, if any.
    pub(super) async fn next_message(
        &self,
        subject: &str,
        from_sequence: u64,
        from: Replica,
    ) -> Result<Option<jetstream::message::StreamMessage>, StoreError<A>> {
        let stream = &self.inner.stream;
        if self.direct_reads(from) {
            match stream.direct_get_next_for_subject(subject, Some(from_sequence)).await {
                Ok(message) => return Ok(Some(message)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) if !no_direct_responder(&e) => return Err(unavailable::<A>(e)),
                Err(_) => {}
            }
        }
        let request = stream.raw_message_builder().sequence(from_sequence).next_by_subject(subject);
        match request.send().await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable::<A>(e)),
        }
    }

    /// Whether a read that `from` may answer can be a direct get.
    fn direct_reads(&self, from: Replica) -> bool {
        from == Replica::Any || self.inner.stream.cached_info().config.num_replicas <= 1
    }
}

/// A direct get nobody answered: on a fresh or just-moved stream the replicas' direct-get subscriptions
/// reach the client's server a moment after the stream does, while the JetStream API (which reaches the
/// leader) answers at once.
fn no_direct_responder(error: &DirectGetError) -> bool {
    matches!(error.kind(), DirectGetErrorKind::ErrorResponse(status, _) if status == async_nats::StatusCode::NO_RESPONDERS)
}

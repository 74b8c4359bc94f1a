//! Running a command against the store: load, check the caller's expected version, handle, append;
//! races with other processes retried, a caller's expected version never.

use std::sync::Arc;

use cqrs_es::{AggregateError, event_sink::EventSink};

use super::{CONFLICT_RETRIES, Committed, ExecuteError, JetStreamStore, StreamAggregate};
use crate::envelope::{CommandMetadata, DecodeError};

impl<A: StreamAggregate> JetStreamStore<A> {
    /// Runs a command: loads the aggregate, checks `expected_version`, lets the aggregate handle the
    /// command and appends its events as one message. Races with other processes are retried; a
    /// caller-supplied expected version is never retried.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        expected_version: Option<u64>,
        metadata: CommandMetadata,
    ) -> Result<Committed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.run(aggregate_id, command, services, expected_version, metadata, false).await
    }

    /// [`Self::execute`] for an aggregate whose id the caller has just generated, so it cannot have
    /// events: skips loading it. Only for ids that are new beyond doubt (a retried command must use
    /// `execute`): the expected-sequence check covers the subject the command is published to, not other
    /// partitions.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: CommandMetadata,
    ) -> Result<Committed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.run(aggregate_id, command, services, Some(0), metadata, true).await
    }

    async fn run(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        expected_version: Option<u64>,
        metadata: CommandMetadata,
        assume_new: bool,
    ) -> Result<Committed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut conflicts = 0;
        loop {
            let mut context = self.lock_with(aggregate_id, assume_new).await.map_err(execute_error)?;
            if let Some(expected) = expected_version
                && expected != context.version
            {
                // The cache may lag a write by another process that the caller has seen (a fresh GET's
                // ETag): the stream decides.
                if !assume_new {
                    self.refresh(&mut context).await.map_err(execute_error)?;
                }
                if expected != context.version {
                    return Err(ExecuteError::VersionMismatch { expected, current: context.version });
                }
            }
            let sink = EventSink::default();
            context
                .aggregate
                .handle(command.clone(), services, &sink)
                .await
                .map_err(ExecuteError::Rejected)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    version: context.version,
                    stream_sequence: None,
                    events,
                    duplicate: false,
                    aggregate: Arc::new(context.aggregate),
                });
            }
            let loaded = context.version;
            let version = loaded + events.len() as u64;
            match self.append(&events, context, metadata.clone()).await {
                Ok((sequence, false, aggregate)) => {
                    return Ok(Committed {
                        version,
                        stream_sequence: Some(sequence),
                        events,
                        duplicate: false,
                        aggregate,
                    });
                }
                Ok((sequence, true, _)) => {
                    // This command id was stored before, by an earlier attempt: report the aggregate as the
                    // stream has it, not as this attempt would have left it.
                    let (aggregate, version) = self.load_fresh(aggregate_id).await.map_err(execute_error)?;
                    return Ok(Committed {
                        version,
                        stream_sequence: Some(sequence),
                        events,
                        duplicate: true,
                        aggregate: Arc::new(aggregate),
                    });
                }
                Err(AggregateError::AggregateConflict) if expected_version.is_some() => {
                    // Another process moved the aggregate between our load and our publish.
                    let current = self.load(aggregate_id).await.map_err(execute_error)?.1;
                    // The caller expected the version we loaded (checked above), whatever the command emits.
                    return Err(ExecuteError::VersionMismatch { expected: loaded, current });
                }
                Err(AggregateError::AggregateConflict) if conflicts < CONFLICT_RETRIES => conflicts += 1,
                Err(e) => return Err(execute_error(e)),
            }
        }
    }
}

fn execute_error<E: std::error::Error>(e: AggregateError<E>) -> ExecuteError<E> {
    match e {
        AggregateError::UserError(e) => ExecuteError::Rejected(e),
        AggregateError::AggregateConflict => ExecuteError::Conflict,
        AggregateError::DatabaseConnectionError(e) => ExecuteError::Unavailable(e.to_string()),
        AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
            ExecuteError::Corrupt(e.to_string())
        }
    }
}

impl From<DecodeError> for ExecuteError<std::convert::Infallible> {
    fn from(e: DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

//! The wire form of the event log: one JetStream message per command, carrying that command's events,
//! the metadata of the command, and a snapshot of the aggregate after it.
//!
//! One message per command makes a command's events atomic with a plain publish (JetStream's atomic batch
//! publish is two orders of magnitude slower on file storage; see ARCHITECTURE.md). The snapshot makes
//! loading an aggregate one direct get of its subject's last message instead of a replay.

use std::collections::HashMap;

use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Header names. Frozen: consumers outside this workspace read them. The aggregate's type and id are in
/// the subject and the payload, and the operation id is `Nats-Msg-Id`, so they are not repeated here.
pub mod headers {
    /// JetStream duplicate suppression; the command id
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// aggregate version after this message's events
    pub const AGGREGATE_VERSION: &str = "Cp-Aggregate-Version";
    /// event types, comma separated, in order
    pub const EVENT_TYPE: &str = "Cp-Event-Type";
    /// schema versions of the events, comma separated, in order
    pub const SCHEMA_VERSION: &str = "Cp-Schema-Version";
    /// the operation kind, e.g. `provision`
    pub const OPERATION: &str = "Cp-Operation";
    /// correlation id (the request id of the API call that caused it)
    pub const CORRELATION_ID: &str = "Cp-Correlation-Id";
    /// causation id (the message or command that caused it)
    pub const CAUSATION_ID: &str = "Cp-Causation-Id";
    /// who asked
    pub const ACTOR: &str = "Cp-Actor";
    /// when the command was committed, RFC 3339
    pub const TIME: &str = "Cp-Time";
}

/// What is recorded about the command that produced a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMetadata {
    /// command id; also the operation id and the `Nats-Msg-Id`
    pub command_id: Uuid,
    /// operation kind, e.g. `provision`, `update`, `deprovision`
    pub operation: String,
    /// correlation id
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// causation id
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// who asked
    pub actor: String,
    /// SHA-256 of the Idempotency-Key record this command was made under, if any
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// commit time
    pub time: DateTime<Utc>,
}

impl CommandMetadata {
    /// Metadata for a new command now.
    pub fn new(operation: impl Into<String>, actor: impl Into<String>) -> Self {
        Self {
            command_id: Uuid::now_v7(),
            operation: operation.into(),
            correlation_id: None,
            causation_id: None,
            actor: actor.into(),
            idempotency_key: None,
            time: Utc::now(),
        }
    }

    /// Reads metadata from cqrs-es's string map (keys as the field names); missing fields get defaults.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let mut meta = Self::new(map.get("operation").cloned().unwrap_or_default(), "unknown");
        if let Some(id) = map.get("command_id").and_then(|id| id.parse().ok()) {
            meta.command_id = id;
        }
        meta.correlation_id = map.get("correlation_id").cloned();
        meta.causation_id = map.get("causation_id").cloned();
        meta.idempotency_key = map.get("idempotency_key").cloned();
        if let Some(actor) = map.get("actor") {
            meta.actor.clone_from(actor);
        }
        meta
    }

    /// The string map cqrs-es envelopes carry.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("command_id".to_owned(), self.command_id.to_string()),
            ("operation".to_owned(), self.operation.clone()),
            ("actor".to_owned(), self.actor.clone()),
            ("time".to_owned(), self.time.to_rfc3339_opts(SecondsFormat::Micros, true)),
        ]);
        let optional = [
            ("correlation_id", &self.correlation_id),
            ("causation_id", &self.causation_id),
            ("idempotency_key", &self.idempotency_key),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value.clone());
            }
        }
        map
    }
}

/// One event in its stored form: `{"type", "schema", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// frozen event type
    #[serde(rename = "type")]
    pub event_type: String,
    /// schema version of `data`
    pub schema: String,
    /// payload
    #[serde(default)]
    pub data: Value,
}

/// The aggregate's state after the message's events, in its serde form. Kept as raw JSON: readers that
/// do not need it (projections, auditors) skip it without building a tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// format version; see [`crate::StreamAggregate::SNAPSHOT_VERSION`]
    pub version: u32,
    /// the aggregate
    pub state: Box<serde_json::value::RawValue>,
}

/// The payload of one event-stream message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBatch {
    /// aggregate type
    pub aggregate_type: String,
    /// aggregate id
    pub aggregate_id: String,
    /// aggregate version of the first event (versions count events from 1)
    pub first_version: u64,
    /// the command's events, in order
    pub events: Vec<StoredEvent>,
    /// the command
    pub metadata: CommandMetadata,
    /// the aggregate after the events
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// Why a stored message could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// the payload is not an event batch
    #[error("malformed event batch: {0}")]
    Malformed(#[source] serde_json::Error),
    /// an event of a type or schema version this build does not know
    #[error("unknown event {event_type} schema {schema}: {source}")]
    UnknownEvent {
        /// event type
        event_type: String,
        /// schema version
        schema: String,
        /// cause
        #[source]
        source: serde_json::Error,
    },
}

impl EventBatch {
    /// Aggregate version after this batch.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.events.len() as u64 - 1
    }

    /// Encodes events of `A`; `data` is the event's serde form minus the `type` tag when it has one.
    pub fn encode_events<A: Aggregate>(events: &[A::Event]) -> Result<Vec<StoredEvent>, serde_json::Error> {
        events
            .iter()
            .map(|event| {
                let mut value = serde_json::to_value(event)?;
                // Adjacently tagged enums serialize as {"type", "data"}: store that without nesting.
                let data = match value.as_object_mut() {
                    Some(obj) if obj.len() <= 2 && obj.contains_key("type") => {
                        obj.remove("data").unwrap_or(Value::Null)
                    }
                    _ => value,
                };
                Ok(StoredEvent { event_type: event.event_type(), schema: event.event_version(), data })
            })
            .collect()
    }

    /// Decodes the events back into `A::Event`s.
    pub fn decode_events<A: Aggregate>(&self) -> Result<Vec<A::Event>, DecodeError> {
        self.events
            .iter()
            .map(|stored| {
                let tagged = serde_json::json!({"type": stored.event_type, "data": stored.data});
                serde_json::from_value(tagged).map_err(|source| DecodeError::UnknownEvent {
                    event_type: stored.event_type.clone(),
                    schema: stored.schema.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Parses a message payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(payload).map_err(DecodeError::Malformed)
    }

    /// The message headers describing this batch.
    pub fn headers(&self) -> HeaderMap {
        let join = |f: fn(&StoredEvent) -> &str| self.events.iter().map(f).collect::<Vec<_>>().join(",");
        let meta = &self.metadata;
        let mut map = HeaderMap::new();
        map.insert(headers::MSG_ID, meta.command_id.to_string().as_str());
        map.insert(headers::AGGREGATE_VERSION, self.last_version().to_string().as_str());
        map.insert(headers::EVENT_TYPE, join(|e| &e.event_type).as_str());
        map.insert(headers::SCHEMA_VERSION, join(|e| &e.schema).as_str());
        map.insert(headers::OPERATION, meta.operation.as_str());
        map.insert(headers::ACTOR, meta.actor.as_str());
        map.insert(headers::TIME, meta.time.to_rfc3339_opts(SecondsFormat::Micros, true).as_str());
        if let Some(id) = &meta.correlation_id {
            map.insert(headers::CORRELATION_ID, id.as_str());
        }
        if let Some(id) = &meta.causation_id {
            map.insert(headers::CAUSATION_ID, id.as_str());
        }
        map
    }
}

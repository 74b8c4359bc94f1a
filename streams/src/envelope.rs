//! The wire form of the event log: one JetStream message per command, carrying that command's events,
//! the metadata of the command, and a snapshot of the aggregate after it.
//!
//! One message per command makes a command's events atomic with a plain publish, whether the message goes
//! alone or in a group commit's batch with other aggregates' messages (see [`crate::group_commit`]). The
//! snapshot makes loading an aggregate one direct get of its subject's last message instead of a replay.

use std::collections::HashMap;

use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::{Aggregate, DomainEvent, persist::SerializedEvent};
use domain::OperationKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::store::StreamAggregate;

pub mod headers;

pub use headers::MessageHeaders;

/// What is recorded about the command that produced a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMetadata {
    /// command id; also the operation id (`Cp-Command-Id`, and `Nats-Msg-Id` when published alone)
    pub command_id: Uuid,
    /// what the command does
    pub operation: OperationKind,
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
    pub fn new(operation: OperationKind, actor: impl Into<String>) -> Self {
        Self {
            command_id: Uuid::now_v7(),
            operation,
            correlation_id: None,
            causation_id: None,
            actor: actor.into(),
            idempotency_key: None,
            time: Utc::now(),
        }
    }

    /// Reads metadata from cqrs-es's string map (keys as the field names); missing fields get defaults.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let operation = map
            .get("operation")
            .and_then(|o| serde_json::from_value(Value::String(o.clone())).ok())
            .unwrap_or(OperationKind::Update);
        let mut meta = Self::new(operation, "unknown");
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
            ("operation".to_owned(), self.operation.as_str().to_owned()),
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
    /// a message whose snapshot is in another format and whose events are not the whole history, read
    /// by a reader that cannot replay the subject
    #[error("{aggregate_id}: no snapshot in format {snapshot_version} and not the whole history")]
    NoReadableSnapshot {
        /// aggregate id
        aggregate_id: String,
        /// the snapshot format this build reads
        snapshot_version: u32,
    },
    /// an event in a schema this build neither writes nor can upcast from (written by a newer build?)
    #[error(
        "event {event_type} has schema {schema}; this build reads schema {known} (and upcasts older ones)"
    )]
    UnsupportedSchema {
        /// event type
        event_type: String,
        /// schema version as stored (after any upcasting)
        schema: String,
        /// the schema this build writes for that type
        known: String,
    },
}

impl EventBatch {
    /// Aggregate version after this batch.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.events.len() as u64 - 1
    }

    /// Encodes events of `A`; `data` is the event's serde form minus the `type` tag when it has one.
    pub fn encode_events<A: Aggregate>(events: &[A::Event]) -> Result<Vec<StoredEvent>, serde_json::Error> {
        events.iter().map(stored_event).collect()
    }

    /// Decodes the events back into `A::Event`s, upcasting those stored in an older schema
    /// ([`StreamAggregate::upcasters`]). An event whose schema this build does not write even after
    /// upcasting is refused rather than read with fields missing.
    pub fn decode_events<A: StreamAggregate>(&self) -> Result<Vec<A::Event>, DecodeError> {
        self.events.iter().map(|stored| decode_event::<A>(self, stored)).collect()
    }

    /// The aggregate after this batch, from its snapshot when the snapshot is in the format this build
    /// reads ([`StreamAggregate::SNAPSHOT_VERSION`], or an older one it still reads:
    /// [`StreamAggregate::from_older_snapshot`]); else, when the batch is the aggregate's whole
    /// history (it starts at version 1), by folding its events. `None` when neither is possible: the
    /// caller must replay the subject, or refuse.
    pub fn aggregate<A: StreamAggregate>(&self) -> Option<Result<A, DecodeError>> {
        match &self.snapshot {
            Some(snapshot) if snapshot.version == A::SNAPSHOT_VERSION => {
                Some(serde_json::from_str(snapshot.state.get()).map_err(DecodeError::Malformed))
            }
            Some(snapshot)
                if let Some(read) =
                    A::from_older_snapshot(snapshot.version, snapshot.state.get(), self.last_version()) =>
            {
                Some(read.map_err(DecodeError::Malformed))
            }
            _ if self.first_version == 1 => Some(self.decode_events::<A>().map(|events| {
                let mut aggregate = A::default();
                for event in events {
                    aggregate.apply(event);
                }
                aggregate
            })),
            _ => None,
        }
    }

    /// Parses a message payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(payload).map_err(DecodeError::Malformed)
    }

    /// The message for a command: the payload (this type's JSON form) and its headers, written straight
    /// from borrowed parts into one buffer. This is the write path's hot loop, so it builds no JSON tree
    /// and copies neither the events nor the snapshot (`EventBatch` + `serde_json::to_vec` cost about a
    /// quarter of the store's CPU per command).
    pub fn encode<A: Aggregate>(
        aggregate_id: &str,
        first_version: u64,
        events: &[A::Event],
        metadata: CommandMetadata,
        snapshot: Option<(u32, &A)>,
    ) -> Result<(Vec<u8>, MessageHeaders), serde_json::Error> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"aggregate_type\":");
        serde_json::to_writer(&mut out, A::TYPE)?;
        out.extend_from_slice(b",\"aggregate_id\":");
        serde_json::to_writer(&mut out, aggregate_id)?;
        out.extend_from_slice(b",\"first_version\":");
        serde_json::to_writer(&mut out, &first_version)?;
        out.extend_from_slice(b",\"events\":[");
        let mut types = String::new();
        let mut schemas = String::new();
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
                types.push(',');
                schemas.push(',');
            }
            let (event_type, schema) = (event.event_type(), event.event_version());
            write_event(&mut out, event, &event_type, &schema)?;
            types.push_str(&event_type);
            schemas.push_str(&schema);
        }
        out.extend_from_slice(b"],\"metadata\":");
        serde_json::to_writer(&mut out, &metadata)?;
        if let Some((version, state)) = snapshot {
            out.extend_from_slice(b",\"snapshot\":{\"version\":");
            serde_json::to_writer(&mut out, &version)?;
            out.extend_from_slice(b",\"state\":");
            serde_json::to_writer(&mut out, state)?;
            out.push(b'}');
        }
        out.push(b'}');
        let last_version = first_version + events.len() as u64 - 1;
        Ok((out, MessageHeaders::new(metadata, last_version, types, schemas)))
    }

    /// The message headers describing this batch.
    pub fn headers(&self) -> HeaderMap {
        let join = |f: fn(&StoredEvent) -> &str| self.events.iter().map(f).collect::<Vec<_>>().join(",");
        headers::message_headers(
            &self.metadata,
            self.last_version(),
            &join(|e| &e.event_type),
            &join(|e| &e.schema),
        )
    }
}

fn decode_event<A: StreamAggregate>(
    batch: &EventBatch,
    stored: &StoredEvent,
) -> Result<A::Event, DecodeError> {
    let upcasters = A::upcasters();
    let (event_type, schema, data) =
        if upcasters.iter().any(|u| u.can_upcast(&stored.event_type, &stored.schema)) {
            let mut event = SerializedEvent::new(
                batch.aggregate_id.clone(),
                0,
                batch.aggregate_type.clone(),
                stored.event_type.clone(),
                stored.schema.clone(),
                stored.data.clone(),
                Value::Null,
            );
            for upcaster in upcasters {
                if upcaster.can_upcast(&event.event_type, &event.event_version) {
                    event = upcaster.upcast(event);
                }
            }
            (event.event_type, event.event_version, event.payload)
        } else {
            (stored.event_type.clone(), stored.schema.clone(), stored.data.clone())
        };
    let tagged = serde_json::json!({"type": event_type, "data": data});
    let event: A::Event = serde_json::from_value(tagged).map_err(|source| DecodeError::UnknownEvent {
        event_type: event_type.clone(),
        schema: schema.clone(),
        source,
    })?;
    let known = event.event_version();
    if known != schema {
        return Err(DecodeError::UnsupportedSchema { event_type, schema, known });
    }
    Ok(event)
}

/// Writes one event in its stored form `{"schema", "type", "data"}`. Adjacently tagged enums (the usual
/// shape of a cqrs-es event) already serialize as `{"type":…,"data":…}`: the schema is spliced into
/// that object. Any other shape goes through [`EventBatch::encode_events`]'s tree.
fn write_event<E: Serialize + DomainEvent>(
    out: &mut Vec<u8>,
    event: &E,
    event_type: &str,
    schema: &str,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    serde_json::to_writer(&mut *out, event)?;
    let mut prefix = Vec::with_capacity(event_type.len() + 10);
    prefix.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut prefix, event_type)?;
    let written = &out[start..];
    let adjacently_tagged = written.starts_with(&prefix)
        && matches!(&written[prefix.len()..], b"}" | [b',', b'"', b'd', b'a', b't', b'a', b'"', b':', ..]);
    if adjacently_tagged {
        let mut field = Vec::with_capacity(schema.len() + 12);
        field.extend_from_slice(b"\"schema\":");
        serde_json::to_writer(&mut field, schema)?;
        field.push(b',');
        out.splice(start + 1..start + 1, field);
    } else {
        out.truncate(start);
        serde_json::to_writer(&mut *out, &stored_event(event)?)?;
    }
    Ok(())
}

fn stored_event<E: Serialize + DomainEvent>(event: &E) -> Result<StoredEvent, serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    // Adjacently tagged enums serialize as {"type", "data"}: store that without nesting.
    let data = match value.as_object_mut() {
        Some(obj) if obj.len() <= 2 && obj.contains_key("type") => obj.remove("data").unwrap_or(Value::Null),
        _ => value,
    };
    Ok(StoredEvent { event_type: event.event_type(), schema: event.event_version(), data })
}

#[cfg(test)]
mod tests {
    use domain::{Instance, InstanceEvent, Resources, ServiceType, instance::InstanceProvisioned};
    use serde_json::json;

    use super::*;

    fn provisioned() -> (Instance, Vec<InstanceEvent>) {
        let events = vec![
            InstanceEvent::InstanceProvisioned(InstanceProvisioned {
                instance_id: Uuid::now_v7(),
                project: "p".into(),
                name: "x".into(),
                service: ServiceType::Postgresql,
                version: "16".into(),
                plan: "starter".into(),
                resources: Resources { cpu_millis: 500, memory_mib: 1024, replicas: 1 },
                storage_gib: 10,
                config: Default::default(),
                description: String::new(),
                deletion_protection: false,
                cluster: "eu-1".into(),
            }),
            InstanceEvent::DescriptionChanged { description: "a \"quoted\" text".into() },
            InstanceEvent::DeprovisioningStarted {},
        ];
        let mut instance = Instance::default();
        for event in &events {
            cqrs_es::Aggregate::apply(&mut instance, event.clone());
        }
        (instance, events)
    }

    /// Header names and the payload's field names are read by consumers outside this workspace: pinned
    /// here as literals, not through the constants they would have to match.
    #[test]
    fn the_message_format_s_names_are_frozen() {
        let (instance, events) = provisioned();
        let mut metadata = CommandMetadata::new(domain::OperationKind::Provision, "alice");
        metadata.correlation_id = Some("req-1".into());
        metadata.causation_id = Some("cause-1".into());
        let (payload, headers) =
            EventBatch::encode::<Instance>("p.x", 1, &events, metadata.clone(), Some((1, &instance)))
                .unwrap();
        let headers = headers.build();
        let mut names: Vec<String> = headers.iter().map(|(name, _)| name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "Cp-Actor",
                "Cp-Aggregate-Version",
                "Cp-Causation-Id",
                "Cp-Command-Id",
                "Cp-Correlation-Id",
                "Cp-Event-Type",
                "Cp-Operation",
                "Cp-Schema-Version",
                "Cp-Time"
            ]
        );
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            get("Cp-Event-Type").as_deref(),
            Some("InstanceProvisioned,DescriptionChanged,DeprovisioningStarted")
        );
        assert_eq!(get("Cp-Schema-Version").as_deref(), Some("1,1,1"));
        assert_eq!(get("Cp-Operation").as_deref(), Some("provision"));
        assert_eq!(get("Cp-Aggregate-Version").as_deref(), Some("3"));
        assert_eq!(headers::MSG_ID, "Nats-Msg-Id");
        assert_eq!(headers::CHAIN, "Cp-Chain");

        let body: Value = serde_json::from_slice(&payload).unwrap();
        let mut fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["aggregate_id", "aggregate_type", "events", "first_version", "metadata", "snapshot"]
        );
        let mut meta: Vec<&str> = body["metadata"].as_object().unwrap().keys().map(String::as_str).collect();
        meta.sort_unstable();
        assert_eq!(meta, ["actor", "causation_id", "command_id", "correlation_id", "operation", "time"]);
        assert_eq!(
            body["events"][1],
            serde_json::json!({"type": "DescriptionChanged", "schema": "1", "data": {"description": "a \"quoted\" text"}})
        );
        assert_eq!(body["snapshot"]["version"], 1);
    }

    #[test]
    fn the_direct_encoding_is_the_batch_s_json_form() {
        let (instance, events) = provisioned();
        let mut metadata = CommandMetadata::new(domain::OperationKind::Provision, "alice");
        metadata.correlation_id = Some("req-1".into());
        let (payload, headers) =
            EventBatch::encode::<Instance>("p.x", 4, &events, metadata.clone(), Some((7, &instance)))
                .unwrap();
        let headers = headers.build();

        let expected = EventBatch {
            aggregate_type: "instance".into(),
            aggregate_id: "p.x".into(),
            first_version: 4,
            events: EventBatch::encode_events::<Instance>(&events).unwrap(),
            metadata,
            snapshot: Some(Snapshot {
                version: 7,
                state: serde_json::value::to_raw_value(&instance).unwrap(),
            }),
        };
        let actual: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(actual, serde_json::to_value(&expected).unwrap());
        let decoded = EventBatch::from_slice(&payload).unwrap();
        assert_eq!(decoded.decode_events::<Instance>().unwrap(), events);
        assert_eq!(decoded.last_version(), 6);
        let header = |name| headers.get(name).map(|v| v.as_str().to_owned());
        let expected_headers = expected.headers();
        for name in [
            headers::COMMAND_ID,
            headers::AGGREGATE_VERSION,
            headers::EVENT_TYPE,
            headers::SCHEMA_VERSION,
            headers::OPERATION,
            headers::ACTOR,
            headers::TIME,
            headers::CORRELATION_ID,
            headers::CAUSATION_ID,
        ] {
            assert_eq!(header(name), expected_headers.get(name).map(|v| v.as_str().to_owned()), "{name}");
        }
        assert_eq!(header(headers::AGGREGATE_VERSION).as_deref(), Some("6"));
    }

    /// Events of other serde shapes are stored through the tree, in the same `{type, schema, data}` form.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum External {
        Renamed { to: String },
    }

    impl DomainEvent for External {
        fn event_type(&self) -> String {
            "Renamed".into()
        }
        fn event_version(&self) -> String {
            "3".into()
        }
    }

    #[test]
    fn events_that_are_not_adjacently_tagged_take_the_generic_path() {
        let event = External::Renamed { to: "b".into() };
        let mut out = b"[".to_vec();
        write_event(&mut out, &event, "Renamed", "3").unwrap();
        let stored: Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(
            stored,
            json!({"type": "Renamed", "schema": "3", "data": {"Renamed": {"to": "b"}}}),
            "the whole serde form becomes the data"
        );
    }
}

//! Header names. Frozen: consumers outside this workspace read them. The aggregate's type and id are in
//! the subject and the payload, so they are not repeated here.
//!
//! [`MessageHeaders`] builds them for a message of the store.

use async_nats::{HeaderMap, header::HeaderName};
use chrono::SecondsFormat;

use super::CommandMetadata;

/// the command id, which is also the operation id
pub const COMMAND_ID: &str = "Cp-Command-Id";
/// JetStream duplicate suppression, the command id again; only on messages published alone (JetStream
/// refuses it inside the atomic batches of a group commit)
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
/// the subjects the expected last subject sequence is checked against, when not the message's own
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// the message's link in its subject's audit chain (hex SHA-256; see [`crate::chain`])
pub const CHAIN: &str = "Cp-Chain";

/// What a message's headers are made of, from [`super::EventBatch::encode`]. They are built for each send
/// ([`Self::build`]) rather than copied: async-nats's `HeaderMap` is a hash map of allocated strings, and
/// keeping a copy of it for a possible re-send cost ~5% of the store's client instructions per command.
#[derive(Debug, Clone)]
pub struct MessageHeaders {
    metadata: CommandMetadata,
    last_version: u64,
    types: String,
    schemas: String,
    chain: Option<String>,
    expected_subjects: Option<String>,
}

impl MessageHeaders {
    pub(super) fn new(metadata: CommandMetadata, last_version: u64, types: String, schemas: String) -> Self {
        Self { metadata, last_version, types, schemas, chain: None, expected_subjects: None }
    }

    /// Makes the expected last sequence apply to every subject matching `filter` rather than to the
    /// message's own subject only: for the message of an aggregate that moves to a subject of another
    /// partition (`Nats-Expected-Last-Subject-Sequence-Subject`, nats-server 2.11+,
    /// `server/stream.go` `JSExpectedLastSubjSeqSubj`).
    pub fn with_expected_subjects(mut self, filter: String) -> Self {
        self.expected_subjects = Some(filter);
        self
    }

    /// The headers describing the message.
    pub fn build(&self) -> HeaderMap {
        let mut map = message_headers(&self.metadata, self.last_version, &self.types, &self.schemas);
        if let Some(chain) = &self.chain {
            const NAME: HeaderName = HeaderName::from_static(self::CHAIN);
            map.insert(NAME, chain.as_str());
        }
        if let Some(filter) = &self.expected_subjects {
            const NAME: HeaderName = HeaderName::from_static(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT);
            map.insert(NAME, filter.as_str());
        }
        map
    }

    /// Adds the message's link in its subject's audit chain ([`crate::chain::link`]).
    pub fn with_chain(mut self, chain: String) -> Self {
        self.chain = Some(chain);
        self
    }
}

pub(super) fn message_headers(
    meta: &CommandMetadata,
    last_version: u64,
    types: &str,
    schemas: &str,
) -> HeaderMap {
    // Static names: a `&str` name would be validated and copied on every message.
    const COMMAND_ID: HeaderName = HeaderName::from_static(self::COMMAND_ID);
    const AGGREGATE_VERSION: HeaderName = HeaderName::from_static(self::AGGREGATE_VERSION);
    const EVENT_TYPE: HeaderName = HeaderName::from_static(self::EVENT_TYPE);
    const SCHEMA_VERSION: HeaderName = HeaderName::from_static(self::SCHEMA_VERSION);
    const OPERATION: HeaderName = HeaderName::from_static(self::OPERATION);
    const ACTOR: HeaderName = HeaderName::from_static(self::ACTOR);
    const TIME: HeaderName = HeaderName::from_static(self::TIME);
    const CORRELATION_ID: HeaderName = HeaderName::from_static(self::CORRELATION_ID);
    const CAUSATION_ID: HeaderName = HeaderName::from_static(self::CAUSATION_ID);
    let mut map = HeaderMap::new();
    map.insert(COMMAND_ID, meta.command_id.to_string());
    map.insert(AGGREGATE_VERSION, last_version.to_string());
    map.insert(EVENT_TYPE, types);
    map.insert(SCHEMA_VERSION, schemas);
    map.insert(OPERATION, meta.operation.as_str());
    map.insert(ACTOR, header_safe(&meta.actor).as_ref());
    map.insert(TIME, meta.time.to_rfc3339_opts(SecondsFormat::Micros, true));
    if let Some(id) = &meta.correlation_id {
        map.insert(CORRELATION_ID, header_safe(id).as_ref());
    }
    if let Some(id) = &meta.causation_id {
        map.insert(CAUSATION_ID, header_safe(id).as_ref());
    }
    map
}

/// `text` with every control character (CR and LF among them) replaced by `?`, so it can be a header
/// value: these values come from callers (a token's name, a JWT's `sub`, a request id), and a line break in
/// a header makes async-nats panic in the task that sends it — the store's shared group-commit task.
/// The payload keeps the text as it was.
pub fn header_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>().into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_s_line_break_never_reaches_a_header() {
        let mut meta = CommandMetadata::new(domain::OperationKind::Update, "eve\r\nCp-Actor: admin");
        meta.correlation_id = Some("req\n1".into());
        let map = message_headers(&meta, 1, "T", "1");
        assert_eq!(map.get(ACTOR).map(|v| v.as_str()), Some("eve??Cp-Actor: admin"));
        assert_eq!(map.get(CORRELATION_ID).map(|v| v.as_str()), Some("req?1"));
        assert_eq!(header_safe("plain"), std::borrow::Cow::Borrowed("plain"));
    }
}

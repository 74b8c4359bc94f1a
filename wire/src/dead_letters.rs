//! Messages a reader could not use, as operators see them (`streams::dead_letters`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One parked message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// its position in the dead-letter stream (pass it as `after` to read on)
    pub sequence: u64,
    /// who could not use it: `projector` or `agent:<cluster>`
    pub reader: String,
    /// the stream the reader read it from
    pub stream: String,
    /// its sequence in that stream
    pub stream_sequence: u64,
    /// its subject
    pub subject: String,
    /// why it was refused
    pub reason: String,
    /// when it was parked
    pub parked_at: DateTime<Utc>,
    /// a copy of the message (text)
    pub payload: String,
}

/// A page of parked messages, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    /// the parked messages
    pub items: Vec<DeadLetter>,
    /// `after` for the next page, when there may be more
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

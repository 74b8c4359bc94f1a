//! The tamper-evident audit chain of the event store's subjects.
//!
//! Every message the store writes carries [`headers::CHAIN`](crate::headers::CHAIN): the SHA-256 of the
//! previous message's chain value of the same aggregate (on the same subject, unless the aggregate moved
//! partition: see `aggregate_key`), the subject and the payload (which holds the events,
//! the command's metadata — actor, time, operation, correlation — and the snapshot). [`verify`] walks a
//! stream and recomputes every link; the first message whose value does not match is named. An edited
//! message fails its own link; a removed or reordered one fails the next message's.
//!
//! What it protects against: a change to one message, or a few, by anyone who cannot rewrite every later
//! message of the subject (a restored or hand-edited copy, an operator fixing "just this one event", a bug
//! writing outside the store). What it does not: an attacker with write access who recomputes the chain
//! from the edited message onwards, or who truncates a subject's tail (the last message has no successor
//! to betray it). Anchoring the heads elsewhere (publishing them to another account, or signing them) would
//! close both; it is not done. Observed facts (`cp.obs.…`) are not chained: agents do not read their
//! subjects before writing, and a fact can be observed again from the cluster.

use std::collections::HashMap;

use async_nats::jetstream::stream::Stream;
use sha2::{Digest as _, Sha256};

use crate::{
    headers,
    history::{HistoryRange, visit_history},
};

/// The chain value of a message on `subject` with `payload`, after a message whose value was `previous`
/// (`None` for a subject's first message).
pub fn link(previous: Option<&str>, subject: &str, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(previous.unwrap_or_default().as_bytes());
    hash.update(b"\n");
    hash.update(subject.as_bytes());
    hash.update(b"\n");
    hash.update(payload);
    hex::encode(hash.finalize())
}

/// Where a chain breaks: the first message that does not follow from the ones before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// the message's subject
    pub subject: String,
    /// its stream sequence
    pub sequence: u64,
    /// what is wrong
    pub reason: BreakReason,
}

/// What is wrong with a message of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakReason {
    /// its chain value does not match its content and its predecessor: it, or the message before it, was
    /// edited, removed or moved
    Mismatch,
    /// it has no chain value: the store writes one on every message, so something else wrote it (or
    /// stripped it); a subject's first message is no exception, or a forged subject would verify
    Missing,
}

impl Break {
    /// The project and instance whose subject breaks.
    pub fn instance(&self) -> Option<(&str, uuid::Uuid)> {
        crate::instances::parse_event_subject(&self.subject)
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            BreakReason::Mismatch => {
                "its chain value does not follow from its content and the previous message of its subject \
                 (this message, or one before it, was edited, removed or reordered)"
            }
            BreakReason::Missing => {
                "it has no chain value, which the store writes on every message (it was written, or \
                 stripped, by something else)"
            }
        };
        match self.instance() {
            Some((project, id)) => write!(
                f,
                "the chain of instance {project}/{id} breaks at sequence {} ({}): {why}",
                self.sequence, self.subject
            ),
            None => write!(f, "the chain breaks at sequence {} on {}: {why}", self.sequence, self.subject),
        }
    }
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// messages whose link was checked
    pub messages: u64,
    /// aggregates walked (one subject each, unless one moved partition)
    pub subjects: usize,
    /// messages without a chain value; each is a break ([`BreakReason::Missing`]), so the walk stops at
    /// the first
    pub unchained: u64,
    /// the first break, if any; the walk stops there
    pub broken: Option<Break>,
}

/// What a chain is kept per: an aggregate, whatever partition its message is on
/// (`<prefix>.<partition>.<aggregate-id>` → `<aggregate-id>`). An instance that moved to another cluster
/// continues its chain on the new cluster's subject (`domain::instance::migration`); an aggregate that
/// never moved has one subject, so this is the chain of its subject.
fn aggregate_key(subject: &str) -> &str {
    subject.splitn(4, '.').nth(3).unwrap_or(subject)
}

/// Walks every message of `stream` on `filter_subjects` (event-store subjects only: see the module's
/// notes on observed facts), in stream order, and checks every link. The error says what failed to read.
pub async fn verify(stream: &Stream, filter_subjects: Vec<String>) -> Result<Verified, String> {
    let mut heads: HashMap<String, Option<String>, foldhash::fast::RandomState> = HashMap::default();
    let mut report = Verified::default();
    let everything = HistoryRange { after: 0, until: None, limit: usize::MAX };
    visit_history(stream, filter_subjects, everything, |message| {
        let value = message.headers.as_ref().and_then(|h| h.get(headers::CHAIN)).map(|v| v.as_str());
        let head = heads.entry(aggregate_key(&message.subject).to_owned()).or_default();
        let broken =
            |reason| Some(Break { subject: message.subject.clone(), sequence: message.sequence, reason });
        match (value, head.as_deref()) {
            (None, _) => {
                report.unchained += 1;
                report.broken = broken(BreakReason::Missing);
            }
            (Some(value), previous) if link(previous, &message.subject, &message.payload) != value => {
                report.broken = broken(BreakReason::Mismatch);
            }
            (Some(value), _) => {
                *head = Some(value.to_owned());
                report.messages += 1;
            }
        }
        report.broken.is_none()
    })
    .await?;
    report.subjects = heads.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_depends_on_the_predecessor_the_subject_and_the_payload() {
        let first = link(None, "cp.evt.a.p.1", b"{}");
        assert_eq!(first.len(), 64);
        assert_eq!(first, link(None, "cp.evt.a.p.1", b"{}"), "deterministic");
        assert_ne!(first, link(Some(&first), "cp.evt.a.p.1", b"{}"));
        assert_ne!(first, link(None, "cp.evt.a.p.2", b"{}"));
        assert_ne!(first, link(None, "cp.evt.a.p.1", b"{ }"));
    }

    #[test]
    fn a_break_names_its_instance() {
        let id = uuid::Uuid::now_v7();
        let at = |subject: String| Break { subject, sequence: 7, reason: BreakReason::Mismatch };
        assert_eq!(at(format!("cp.evt.eu-1.acme.{id}")).instance(), Some(("acme", id)));
        assert_eq!(
            at(format!("cp.evt.eu-1.acme.{id}.bak.{}", uuid::Uuid::now_v7())).instance(),
            Some(("acme", id))
        );
        assert!(
            at(format!("cp.evt.eu-1.acme.{id}"))
                .to_string()
                .contains(&format!("acme/{id} breaks at sequence 7"))
        );
    }
}

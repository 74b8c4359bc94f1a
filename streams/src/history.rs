//! An instance's history as the event stream holds it: its desired subject, its backups' subjects and its
//! observed subject, read in stream order. Auditors, `as_of` and `diff` read it; nothing here folds.

use async_nats::jetstream::{
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::Stream,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::instances::{instance_subject, observed_subject};

/// How long to wait for the next message of a history that is known not to have ended.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The subjects of an instance's history on `clusters` (where it runs, and every cluster a move involved:
/// `Instance::clusters_involved`): its desired events and its backups', what those clusters observed, and
/// what the control plane stated about its backups. Another cluster's claims about it are not its history.
pub fn instance_history_filters(clusters: &[String], project: &str, instance_id: Uuid) -> Vec<String> {
    let mut filters = Vec::new();
    for cluster in clusters {
        let desired = instance_subject(cluster, project, instance_id);
        filters.push(format!("{desired}.bak.>"));
        filters.push(desired);
        filters.push(observed_subject(cluster, project, instance_id));
    }
    filters.push(observed_subject(crate::observed::CONTROL_PLANE_SOURCE, project, instance_id));
    filters
}

/// When the stream stored a message: the server's clock, which no publisher can set (facts from
/// clusters are dated by it, not by the time their payload claims).
pub fn stored_at(info: &async_nats::jetstream::message::Info<'_>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(info.published.unix_timestamp_nanos() as i64)
}

/// One message of an instance's history.
#[derive(Debug, Clone)]
pub struct HistoryMessage {
    /// its stream sequence
    pub sequence: u64,
    /// its subject
    pub subject: String,
    /// its payload (an event batch, or an observed-state message: see `observed::is_observed_subject`)
    pub payload: Bytes,
    /// when the stream stored it
    pub stored_at: DateTime<Utc>,
    /// its headers, if any (the audit chain's value among them)
    pub headers: Option<async_nats::HeaderMap>,
}

/// What to read.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRange {
    /// only messages after this stream sequence
    pub after: u64,
    /// only messages stored at or before this moment
    pub until: Option<DateTime<Utc>>,
    /// at most this many messages
    pub limit: usize,
}

/// Reads the instance's messages in `range`, in stream order, up to the end of the stream as it is when
/// the read begins. The error says what failed.
pub async fn read_instance_history(
    events: &Stream,
    clusters: &[String],
    project: &str,
    instance_id: Uuid,
    range: HistoryRange,
) -> Result<Vec<HistoryMessage>, String> {
    read_history(events, instance_history_filters(clusters, project, instance_id), range).await
}

/// The subjects of a project's history: its instances' and backups' events and its observed facts.
pub fn project_history_filters(project: &str) -> Vec<String> {
    vec![crate::instances::project_filter(project), crate::instances::observed_project_filter(project)]
}

/// Reads the project's messages in `range`, as [`read_instance_history`] does for one instance.
pub async fn read_project_history(
    events: &Stream,
    project: &str,
    range: HistoryRange,
) -> Result<Vec<HistoryMessage>, String> {
    read_history(events, project_history_filters(project), range).await
}

/// The subjects of a cluster's history: its instances' desired subjects and its observed facts.
pub fn cluster_history_filters(cluster: &str) -> Vec<String> {
    vec![crate::instances::cluster_filter(cluster), crate::instances::observed_cluster_filter(cluster)]
}

/// Reads the cluster's messages in `range`, as [`read_instance_history`] does for one instance.
pub async fn read_cluster_history(
    events: &Stream,
    cluster: &str,
    range: HistoryRange,
) -> Result<Vec<HistoryMessage>, String> {
    read_history(events, cluster_history_filters(cluster), range).await
}

async fn read_history(
    events: &Stream,
    filter_subjects: Vec<String>,
    range: HistoryRange,
) -> Result<Vec<HistoryMessage>, String> {
    let mut out = Vec::new();
    visit_history(events, filter_subjects, range, |message| {
        out.push(message);
        true
    })
    .await?;
    Ok(out)
}

/// Hands each message on `filter_subjects` in `range` to `visit`, in stream order, up to the end of the
/// stream as it is when the read begins, until `visit` answers `false`; holds one message at a time.
/// Returns how many were handed over. The error says what failed.
pub async fn visit_history(
    events: &Stream,
    filter_subjects: Vec<String>,
    range: HistoryRange,
    mut visit: impl FnMut(HistoryMessage) -> bool,
) -> Result<usize, String> {
    let deliver_policy = match range.after {
        0 => DeliverPolicy::All,
        after => DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
    };
    let config = OrderedConfig { deliver_policy, filter_subjects, ..Default::default() };
    let mut consumer = events.create_consumer(config).await.map_err(|e| e.to_string())?;
    let pending = consumer.info().await.map_err(|e| e.to_string())?.num_pending;
    let mut visited = 0;
    if pending == 0 || range.limit == 0 {
        return Ok(visited);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let message = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| format!("the history stopped after {visited} messages"))?
            .ok_or("the history consumer ended")?
            .map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let stored_at = stored_at(&info);
        let (sequence, left) = (info.stream_sequence, info.pending);
        if range.until.is_some_and(|until| stored_at > until) {
            break;
        }
        visited += 1;
        let more = visit(HistoryMessage {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            stored_at,
            headers: message.headers.clone(),
        });
        if !more || left == 0 || visited >= range.limit {
            break;
        }
    }
    Ok(visited)
}

//! An instance's history, its state at a moment, and what changed between two moments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Who wrote an entry: the control plane (a command's event) or a cluster (an observation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistorySource {
    /// an event of a command: what was decided
    Desired,
    /// a fact a cluster (or the control plane's backup worker) observed
    Observed,
}

/// One event of an instance (or of one of its backups), in stream order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// the stream sequence of its message (a command's events share one)
    pub sequence: u64,
    /// when the event stream stored it
    pub time: DateTime<Utc>,
    /// decided or observed
    pub source: HistorySource,
    /// the event type, e.g. `InstanceProvisioned`, `InstanceObserved`
    #[serde(rename = "type")]
    pub event_type: String,
    /// who: the command's actor, or `cluster-agent/<cluster>`
    pub actor: String,
    /// the operation kind of the command, e.g. `provision`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// the operation (command) id
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<Uuid>,
    /// the request id of the API call that caused it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// the message or command that caused it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// the backup it concerns, for a backup's events
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<Uuid>,
    /// the event's content, as stored
    pub data: serde_json::Value,
}

/// A page of history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// entries in stream order
    pub items: Vec<HistoryEntry>,
    /// pass as `page_token` for the next page; absent on the last
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Query of `GET …/history`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// messages per page, 1 to 500 (default 100)
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_page_token` of the previous page (a stream sequence)
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub page_token: Option<u64>,
}

/// Query of `GET …/instances/{id}`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceParams {
    /// the instance as it was at this moment (RFC 3339), from its history (a moment to come: as it is now)
    pub as_of: Option<DateTime<Utc>>,
}

/// Query of `GET …/diff`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// the earlier moment (RFC 3339)
    pub from: DateTime<Utc>,
    /// the later moment (RFC 3339)
    pub to: DateTime<Utc>,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldChange {
    /// JSON pointer into the instance representation, e.g. `/version`
    pub path: String,
    /// its value at `from` (null: absent)
    pub from: serde_json::Value,
    /// its value at `to` (null: absent)
    pub to: serde_json::Value,
}

/// What changed in an instance between two moments, field by field.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceDiff {
    /// the earlier moment
    pub from: DateTime<Utc>,
    /// the later moment
    pub to: DateTime<Utc>,
    /// whether the instance existed at `from`
    pub existed_at_from: bool,
    /// the fields whose values differ, in path order
    pub changes: Vec<FieldChange>,
}

/// The fields in which `to` differs from `from`, as JSON pointers (objects compared key by key, any other
/// value, arrays included, as a whole).
pub fn changes(from: &serde_json::Value, to: &serde_json::Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", from, to, &mut out);
    out
}

fn walk(path: &str, from: &serde_json::Value, to: &serde_json::Value, out: &mut Vec<FieldChange>) {
    use serde_json::Value;
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                walk(&format!("{path}/{escaped}"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(FieldChange { path: path.to_owned(), from: a.clone(), to: b.clone() }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changes_name_each_differing_field_by_pointer() {
        let from =
            json!({"version": "15", "config": {"max_connections": 100}, "acl": ["10.0.0.0/8"], "a/b": 1});
        let to = json!({"version": "16", "config": {"max_connections": 100, "work_mem_kib": 8}, "acl": [], "a/b": 1});
        let paths: Vec<_> = changes(&from, &to).into_iter().map(|c| (c.path, c.from, c.to)).collect();
        assert_eq!(
            paths,
            vec![
                ("/acl".into(), json!(["10.0.0.0/8"]), json!([])),
                ("/config/work_mem_kib".into(), json!(null), json!(8)),
                ("/version".into(), json!("15"), json!("16")),
            ]
        );
        assert!(changes(&from, &from).is_empty());
    }
}

/// What a walk of an instance's audit chain found (`GET …/instances/{id}/history/verify`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChainVerification {
    /// true when every chained message follows from the ones before it
    pub intact: bool,
    /// messages whose link was checked
    pub messages: u64,
    /// messages written before the chain existed, which it does not protect
    pub unchained: u64,
    /// the first message that does not follow, when the chain breaks
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<ChainBreak>,
}

/// The first message of a chain that does not follow from the ones before it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChainBreak {
    /// its stream sequence
    pub sequence: u64,
    /// its subject
    pub subject: String,
    /// what is wrong, for people
    pub detail: String,
}

//! Audit reports from the event stream: per instance, each command (who asked, what, when, and the events
//! it recorded) followed by what its cluster observed until the next command. Read from the stream
//! itself, so a report is as complete as the log, whatever the read models hold.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use streams::{
    envelope::EventBatch,
    history::HistoryMessage,
    observed::{ObservedMessage, is_observed_subject},
};
use uuid::Uuid;

/// One command of an instance (or of one of its backups) and what followed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditedCommand {
    /// stream sequence of its message
    pub sequence: u64,
    /// commit time
    pub time: DateTime<Utc>,
    /// who asked
    pub actor: String,
    /// the operation kind, e.g. `provision`
    pub operation: String,
    /// the operation id
    pub operation_id: Uuid,
    /// the events it recorded, by type
    pub events: Vec<String>,
    /// what the cluster (or the control plane's backup worker) observed after it, until the next command
    pub observed_after: Vec<Observation>,
}

/// One observed fact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// when it was observed
    pub time: DateTime<Utc>,
    /// its type, e.g. `InstanceObserved`
    #[serde(rename = "type")]
    pub event_type: String,
    /// a one-line summary, e.g. `ready, generation 3`
    pub summary: String,
}

/// An instance's audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceAudit {
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// its commands in order
    pub commands: Vec<AuditedCommand>,
    /// facts observed before its first command in the read range
    pub observed_before: Vec<Observation>,
}

fn summary(message: &ObservedMessage) -> String {
    use domain::observed::ObservedEvent as E;
    match &message.event {
        E::InstanceObserved(state) => {
            let phase = format!("{:?}", state.phase).to_lowercase();
            let generation = state.observed_generation.map_or("none".into(), |g| g.to_string());
            let reason = state.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!("{phase}; generation {generation} of {} ready{reason}", message.desired_generation)
        }
        E::DriftHealed { objects, .. } => format!("put back {}", objects.join(", ")),
        E::InstanceRemoved { .. } => "every object removed".into(),
        E::BackupStarted { backup_id } => format!("backup {backup_id} started"),
        E::BackupCompleted { backup_id, size_bytes, .. } => {
            format!("backup {backup_id} completed, {size_bytes} bytes")
        }
        E::BackupFailed { backup_id, reason } => format!("backup {backup_id} failed: {reason}"),
        E::BackupVerified { backup_id, matches, .. } => {
            format!("backup {backup_id} {}", if *matches { "verified" } else { "does not match its report" })
        }
        E::BackupDeleted { backup_id } => format!("backup {backup_id} deleted from the store"),
    }
}

/// Builds the audit of every instance whose messages are in `messages` (stream order), from `since` on.
/// Messages that cannot be read are left out and counted in the second value.
pub fn report(messages: &[HistoryMessage], since: Option<DateTime<Utc>>) -> (Vec<InstanceAudit>, usize) {
    let mut audits: BTreeMap<(String, Uuid), InstanceAudit> = BTreeMap::new();
    let mut unreadable = 0;
    for message in messages.iter().filter(|m| since.is_none_or(|s| m.stored_at >= s)) {
        if is_observed_subject(&message.subject) {
            // A fact counts for the instance its subject names (which NATS binds to the cluster that
            // published it), and only when its payload agrees; it is dated by the stream.
            let (Ok(observed), Some(subject)) = (
                ObservedMessage::from_slice(&message.payload),
                streams::observed::parse_observed_subject(&message.subject),
            ) else {
                unreadable += 1;
                continue;
            };
            if observed.project != subject.project || observed.instance_id != subject.instance_id {
                unreadable += 1;
                continue;
            }
            let audit = entry(&mut audits, subject.project, subject.instance_id);
            let observation = Observation {
                time: message.stored_at,
                event_type: observed.event.type_name().to_owned(),
                summary: summary(&observed),
            };
            match audit.commands.last_mut() {
                Some(command) => command.observed_after.push(observation),
                None => audit.observed_before.push(observation),
            }
            continue;
        }
        let Ok(batch) = EventBatch::from_slice(&message.payload) else {
            unreadable += 1;
            continue;
        };
        let Some((project, instance_id)) = streams::instances::parse_aggregate_id(&batch.aggregate_id) else {
            unreadable += 1;
            continue;
        };
        let meta = &batch.metadata;
        entry(&mut audits, project, instance_id).commands.push(AuditedCommand {
            sequence: message.sequence,
            time: meta.time,
            actor: meta.actor.clone(),
            operation: meta.operation.as_str().to_owned(),
            operation_id: meta.command_id,
            events: batch.events.iter().map(|e| e.event_type.clone()).collect(),
            observed_after: Vec::new(),
        });
    }
    (audits.into_values().collect(), unreadable)
}

fn entry<'a>(
    audits: &'a mut BTreeMap<(String, Uuid), InstanceAudit>,
    project: &str,
    instance_id: Uuid,
) -> &'a mut InstanceAudit {
    audits.entry((project.to_owned(), instance_id)).or_insert_with(|| InstanceAudit {
        project: project.to_owned(),
        instance_id,
        commands: Vec::new(),
        observed_before: Vec::new(),
    })
}

fn observed_line(seen: &Observation) -> String {
    let time = seen.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("      {time} observed {}: {}\n", seen.event_type, seen.summary)
}

/// The report as text, one block per instance.
pub fn render_text(audits: &[InstanceAudit]) -> String {
    let mut out = String::new();
    let stamp = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for audit in audits {
        out.push_str(&format!("instance {} in project {}\n", audit.instance_id, audit.project));
        for seen in &audit.observed_before {
            out.push_str(&observed_line(seen));
        }
        for command in &audit.commands {
            out.push_str(&format!(
                "  {} {} by {} (operation {}): {}\n",
                stamp(&command.time),
                command.operation,
                command.actor,
                command.operation_id,
                command.events.join(", ")
            ));
            for seen in &command.observed_after {
                out.push_str(&observed_line(seen));
            }
        }
    }
    out
}

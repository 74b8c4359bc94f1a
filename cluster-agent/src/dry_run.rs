//! A dry run of this agent's renderer over a cluster's history, for checking a new agent version against
//! production before rolling it out: for each instance whose agent reported what it applied
//! (`ObservedState::rendered`, the digests of `render::digest`), the desired state at that generation is
//! rendered again with this build's renderer and the objects whose digest differs are named (changed,
//! added or no longer rendered). Reads the stream only: no cluster is touched.
//!
//! It compares digests, so it names the objects a rollout would change, not the fields: the stream keeps
//! what was applied as digests only (the objects can hold configuration a customer set, and the log is
//! not the place for every manifest). Run the new agent against a staging cluster to see the fields.

use std::collections::{BTreeMap, HashMap};

use domain::{Instance, observed::ObservedEvent};
use serde::Serialize;
use streams::{EventBatch, history::HistoryMessage, observed::ObservedMessage};
use uuid::Uuid;

use crate::{
    crd::ManagedInstance,
    render::{Child, backup::StoreTarget, digest::digests},
};

/// How an object would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// rendered differently from what was applied
    Changed,
    /// rendered now, not applied then
    Added,
    /// applied then, not rendered now (a rollout would prune it)
    Removed,
}

/// One object a rollout of this renderer would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDifference {
    /// `Kind/name`
    pub object: String,
    /// how
    pub change: Change,
}

/// An instance a rollout would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceDifferences {
    /// the instance
    pub instance_id: Uuid,
    /// its project
    pub project: String,
    /// its name
    pub name: String,
    /// the generation the agent last reported applied, which was rendered again
    pub generation: u64,
    /// the objects, sorted
    pub objects: Vec<ObjectDifference>,
}

/// What a dry run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunReport {
    /// instances whose last applied objects were compared
    pub compared: usize,
    /// instances without a report of what was applied (never ready, or reported by an older agent)
    pub without_report: usize,
    /// the instances a rollout would change
    pub differences: Vec<InstanceDifferences>,
    /// messages that could not be read (counted, skipped)
    pub unreadable: usize,
}

/// Renders again, with `render`, the desired state of every instance in `messages` (a cluster's history in
/// stream order, `streams::history::read_cluster_history`) at the generation its agent last reported
/// applied, and compares the digests.
pub fn compare(
    messages: &[HistoryMessage],
    store: Option<&StoreTarget>,
    render: impl Fn(&ManagedInstance, Option<&StoreTarget>) -> Vec<Child>,
) -> DryRunReport {
    let mut report = DryRunReport::default();
    // Every version of every instance (the snapshot each message carries), and its last applied report.
    let mut versions: HashMap<Uuid, BTreeMap<u64, Instance>> = HashMap::new();
    let mut applied: HashMap<Uuid, (u64, BTreeMap<String, String>)> = HashMap::new();
    for message in messages {
        if streams::observed::is_observed_subject(&message.subject) {
            match ObservedMessage::from_slice(&message.payload) {
                Ok(observed) => {
                    if let ObservedEvent::InstanceObserved(state) = observed.event {
                        let (Some(generation), Some(rendered)) = (state.observed_generation, state.rendered)
                        else {
                            continue;
                        };
                        applied.insert(state.instance_id, (generation, rendered));
                    }
                }
                Err(_) => report.unreadable += 1,
            }
            continue;
        }
        // Backups have subjects of their own under their instance's; they render nothing.
        if message.subject.contains(".bak.") {
            continue;
        }
        let Ok(batch) = EventBatch::from_slice(&message.payload) else {
            report.unreadable += 1;
            continue;
        };
        match batch.aggregate::<Instance>() {
            Some(Ok(instance)) => {
                if let Some(id) = instance.spec().map(|s| s.id) {
                    versions.entry(id).or_default().insert(batch.last_version(), instance);
                }
            }
            _ => report.unreadable += 1,
        }
    }
    report.without_report = versions.keys().filter(|id| !applied.contains_key(id)).count();
    let mut ids: Vec<&Uuid> = applied.keys().collect();
    ids.sort();
    for id in ids {
        let (generation, recorded) = &applied[id];
        let Some((_, instance)) = versions.get(id).and_then(|v| v.range(..=generation).next_back()) else {
            continue;
        };
        let Ok(Some(object)) = crate::crd::desired_object(instance, *generation) else { continue };
        let Ok(mi) = serde_json::from_value::<ManagedInstance>(object) else {
            report.unreadable += 1;
            continue;
        };
        report.compared += 1;
        let now = digests(&render(&mi, store));
        let mut objects: Vec<ObjectDifference> = now
            .iter()
            .filter_map(|(object, digest)| match recorded.get(object) {
                Some(then) if then == digest => None,
                Some(_) => Some(ObjectDifference { object: object.clone(), change: Change::Changed }),
                None => Some(ObjectDifference { object: object.clone(), change: Change::Added }),
            })
            .chain(
                recorded
                    .keys()
                    .filter(|object| !now.contains_key(*object))
                    .map(|object| ObjectDifference { object: object.clone(), change: Change::Removed }),
            )
            .collect();
        objects.sort_by(|a, b| a.object.cmp(&b.object));
        if !objects.is_empty() {
            let spec = instance.spec().expect("an instance with a desired object has a spec");
            report.differences.push(InstanceDifferences {
                instance_id: *id,
                project: spec.project.clone(),
                name: spec.name.clone(),
                generation: *generation,
                objects,
            });
        }
    }
    report
}

/// The report as text, one instance per paragraph.
pub fn render_text(report: &DryRunReport) -> String {
    let mut out = String::new();
    for instance in &report.differences {
        out.push_str(&format!(
            "{}/{} ({}) at generation {}:\n",
            instance.project, instance.name, instance.instance_id, instance.generation
        ));
        for object in &instance.objects {
            let change = match object.change {
                Change::Changed => "changed",
                Change::Added => "added",
                Change::Removed => "removed",
            };
            out.push_str(&format!("  {change:<8} {}\n", object.object));
        }
    }
    out.push_str(&format!(
        "{} instances compared, {} would change; {} without a report of what was applied; {} unreadable messages\n",
        report.compared,
        report.differences.len(),
        report.without_report,
        report.unreadable
    ));
    out
}

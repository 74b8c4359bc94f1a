//! What the agent's Jobs (rotations, restores, backups) have in common: their names, and how their end
//! is read.

use kube::ResourceExt as _;
use serde_json::Value;

use crate::crd::ManagedInstance;

/// A Job of `mi`: its name with `suffix`, at most 63 characters (Kubernetes puts a Job's name in the
/// `job-name` label of its pods, and label values are limited to 63).
pub fn name(mi: &ManagedInstance, suffix: &str) -> String {
    let name = mi.name_any();
    let keep = name.len().min(63 - suffix.len());
    format!("{}{suffix}", name[..keep].trim_end_matches('-'))
}

/// Whether a Job has finished: `Some(Ok)` when it succeeded, `Some(Err(why))` when it failed for good
/// (batch/v1 JobStatus: the `Complete` and `Failed` conditions are set once, when the Job ends).
pub fn outcome(job: &Value) -> Option<Result<(), String>> {
    let conditions = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let holds = |kind: &str| conditions.iter().find(|c| c["type"] == kind && c["status"] == "True").cloned();
    if holds("Complete").is_some() || job["status"]["succeeded"].as_u64().unwrap_or(0) > 0 {
        return Some(Ok(()));
    }
    holds("Failed")
        .map(|c| Err(c["message"].as_str().or(c["reason"].as_str()).unwrap_or("the Job failed").to_owned()))
}

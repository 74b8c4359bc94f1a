//! What the agent's Jobs (rotations, restores, backups) have in common: their names, and how their end
//! is read.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use crate::crd::ManagedInstance;

/// Label on the pods of every Job of the agent that connects to an instance (rotation, backup, restore),
/// naming the instance: its NetworkPolicy admits these pods to the service port (`network`). The pods
/// carry neither the instance's selector (they are not replicas and must not count as one) nor anything
/// a tenant's client would.
pub const CLIENT_OF_LABEL: &str = "cp.example.com/client-of";

/// How long a rotation's Job may take, from its start, before Kubernetes ends it as failed (batch/v1
/// `JobSpec.activeDeadlineSeconds`, counted while its pod is Pending too, and reported as a `Failed`
/// condition with reason `DeadlineExceeded`): without one a pod that never schedules keeps the operation
/// running for ever.
pub const ROTATION_DEADLINE_SECONDS: u32 = 15 * 60;
/// The same for a backup's or a restore's Job, whose work grows with the data: six hours.
pub const DATA_DEADLINE_SECONDS: u32 = 6 * 60 * 60;

/// A Job pod's security context under Pod Security `restricted` (k8s.io/pod-security-admission v0.36.1
/// `policy/check_runAsNonRoot.go`, `check_seccompProfile_restricted.go`).
pub fn restricted_pod() -> Value {
    json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
}

/// Its container's, as the image's user `uid` (the same policy's `check_runAsNonRoot.go`,
/// `check_allowPrivilegeEscalation.go`, `check_capabilities_restricted.go`,
/// `check_seccompProfile_restricted.go`).
pub fn restricted_container(uid: u32) -> Value {
    json!({
        "runAsNonRoot": true, "runAsUser": uid, "runAsGroup": uid,
        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

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

//! What the API shows of a cluster whose agent fell silent (`streams::liveness`): every instance on it
//! is `unknown`, with the reason and the time of the last heartbeat, whatever its folded status says —
//! the control plane cannot know how it is. Shown, not stored: the read models keep the last status the
//! cluster reported, and the instance reads as that again when the heartbeats resume.

use streams::liveness::LivenessView;
use wire::{Health, Instance};

/// The reason shown while an instance's cluster is unreachable (like Kubernetes' `NodeStatusUnknown` for
/// a node that stopped reporting).
pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";

/// `instance` as the caller sees it now: `unknown` while its cluster is unreachable.
pub fn shown(mut instance: Instance, liveness: &LivenessView) -> Instance {
    let Some(record) = liveness.unreachable(&instance.cluster) else { return instance };
    let message = format!(
        "no heartbeat from cluster {}'s agent since {}",
        instance.cluster,
        record.last_heartbeat.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let status = &mut instance.status;
    status.state = Health::Unknown;
    status.reason = Some(format!("{CLUSTER_UNREACHABLE}: {message}"));
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.condition_type == "Ready") {
        ready.status = "Unknown".into();
        ready.reason = CLUSTER_UNREACHABLE.into();
        ready.message = message;
        ready.last_transition_time = record.since;
    }
    instance
}

//! The checks a fact from a cluster passes before it may change a read model.
//!
//! A member cluster may be taken over together with its agent's credentials (ARCHITECTURE.md, *Threat
//! model*). What an agent publishes is a claim about its own cluster: the subject says which cluster sent
//! it (NATS permissions bind `cp.obs.<cluster>.>` to that cluster's identity), the payload may say
//! anything. A fact is applied only when subject, payload and desired state agree: the payload names the
//! subject's project and instance, the instance is one the control plane placed, and (or the backup's
//! instance) placed on that cluster, a
//! backup's location lies under that instance's prefix, and facts only the control plane can know
//! (verification, deletion) come from the control plane's own source. Anything else is refused, counted
//! by reason and parked in the dead-letter stream.

use streams::observed::{ObservedMessage, ObservedSubject, parse_observed_subject};

/// Why a fact was refused. Each is a claim its publisher could not make honestly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactRefused {
    /// the subject is not `cp.obs.<source>.<project>.<instance-id>`
    #[error("subject {0:?} names no source, project and instance")]
    Subject(String),
    /// the payload names another cluster, project or instance than its subject
    #[error("the payload names {payload}, its subject {subject}")]
    PayloadDisagrees {
        /// what the payload says
        payload: String,
        /// what the subject says
        subject: String,
    },
    /// the instance is not one the control plane ever placed (a cluster learns of instances only from
    /// the event stream, after their creation; every instance's record outlives it)
    #[error("instance {0} is not known to the control plane")]
    UnknownInstance(String),
    /// the instance is placed on another cluster than the one reporting it
    #[error("instance {instance} is placed on {placed}, not on {reporter}")]
    NotPlacedThere {
        /// the instance
        instance: String,
        /// where it is placed
        placed: String,
        /// who reported it
        reporter: String,
    },
    /// the backup is of another instance, or was made on another cluster
    #[error("backup {backup} is of {owner}, not of what {reporter} reported")]
    ForeignBackup {
        /// the backup
        backup: String,
        /// `<cluster>/<project>/<instance>` it belongs to
        owner: String,
        /// who reported it
        reporter: String,
    },
    /// a completed backup's location is not its own artifact's
    #[error(transparent)]
    Location(#[from] domain::backup::LocationError),
    /// a cluster stated what only the control plane can know
    #[error("{0} is stated by the control plane only")]
    ControlPlaneOnly(&'static str),
    /// the control plane's source carried a cluster's fact
    #[error("{0} is stated by clusters only")]
    ClusterOnly(&'static str),
}

impl FactRefused {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Subject(_) => "subject",
            Self::PayloadDisagrees { .. } => "payload_disagrees_with_subject",
            Self::UnknownInstance(_) => "unknown_instance",
            Self::NotPlacedThere { .. } => "instance_not_placed_on_cluster",
            Self::ForeignBackup { .. } => "backup_of_another_instance",
            Self::Location(_) => "backup_location_outside_instance",
            Self::ControlPlaneOnly(_) => "control_plane_fact_from_cluster",
            Self::ClusterOnly(_) => "cluster_fact_from_control_plane",
        }
    }
}

/// The subject's source, project and instance, once the payload agrees with them and the fact may come
/// from that source.
pub(crate) fn bound_to_subject<'a>(
    subject: &'a str,
    message: &ObservedMessage,
) -> Result<ObservedSubject<'a>, FactRefused> {
    let bound = parse_observed_subject(subject).ok_or_else(|| FactRefused::Subject(subject.to_owned()))?;
    let named = message.event.named_instance().unwrap_or(message.instance_id);
    if message.cluster != bound.source
        || message.project != bound.project
        || message.instance_id != bound.instance_id
        || named != bound.instance_id
    {
        return Err(FactRefused::PayloadDisagrees {
            payload: format!("{}/{}/{} ({named})", message.cluster, message.project, message.instance_id),
            subject: format!("{}/{}/{}", bound.source, bound.project, bound.instance_id),
        });
    }
    let control_plane_fact = message.event.stated_by_control_plane();
    match (control_plane_fact, bound.from_control_plane()) {
        (true, false) => Err(FactRefused::ControlPlaneOnly(message.event.type_name())),
        (false, true) => Err(FactRefused::ClusterOnly(message.event.type_name())),
        _ => Ok(bound),
    }
}

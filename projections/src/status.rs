//! Instance status: desired state compared with what the cluster's agent observed, per aspect.
//!
//! An aspect is healthy once the agent has observed (fully applied and ready) a generation at least as new
//! as the one that last changed the aspect; reconciling before that; error when the agent reports a
//! failure. Comparisons are "at least": more ready replicas than desired is healthy.

use chrono::{DateTime, Utc};
use domain::observed::{ObservedPhase, ObservedState};
use serde::{Deserialize, Serialize};

/// Health of one aspect, or of the whole instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// desired equals observed
    Healthy,
    /// desired differs from observed; the agent is working on it
    Reconciling,
    /// the agent reports a failure
    Error,
}

impl Health {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Reconciling => "reconciling",
            Self::Error => "error",
        }
    }
}

pub use domain::instance::Aspect;
use domain::instance::{APPLIED_ASPECTS, Generations};

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// type, e.g. Ready
    pub condition_type: String,
    /// "True", "False" or "Unknown"
    pub status: String,
    /// CamelCase reason
    pub reason: String,
    /// detail
    pub message: String,
    /// when `status` last flipped
    pub last_transition_time: DateTime<Utc>,
    /// the desired generation this condition describes
    pub observed_generation: u64,
}

/// The status of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// overall
    pub state: Health,
    /// per aspect
    pub aspects: Vec<(Aspect, Health)>,
    /// failure reason reported by the agent
    pub reason: Option<String>,
    /// configuration parameters that wait for a restart of the service to apply, while the
    /// configuration is not applied
    #[serde(default)]
    pub pending_restart: Vec<String>,
    /// Ready plus one condition per aspect
    pub conditions: Vec<Condition>,
}

/// What the read model knows of an instance for its status.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// current desired generation (instance version)
    pub generation: u64,
    /// generation that last changed each applied aspect
    pub changed: Generations,
    /// restart parameters changed since the configuration was last applied
    pub restart_pending: &'a std::collections::BTreeSet<String>,
    /// deprovisioning began at this generation
    pub deprovisioning: Option<u64>,
    /// the agent reported every object gone
    pub removed: bool,
    /// latest observed state
    pub observed: Option<&'a ObservedState>,
}

/// Computes the status; `previous` keeps condition transition times stable.
pub fn compute(inputs: Inputs<'_>, previous: Option<&Status>, now: DateTime<Utc>) -> Status {
    let observed_generation = inputs.observed.and_then(|o| o.observed_generation).unwrap_or(0);
    let failed = inputs.observed.is_some_and(|o| o.phase == ObservedPhase::Failed);
    let reason = inputs.observed.filter(|_| failed).and_then(|o| o.reason.clone());
    let mut aspects: Vec<(Aspect, Health)> = APPLIED_ASPECTS
        .iter()
        .map(|aspect| {
            let changed = inputs.changed.get(*aspect).unwrap_or(0);
            let applied = inputs.observed.map_or(0, |o| o.applied(*aspect));
            let health = if applied >= changed {
                Health::Healthy
            } else if failed {
                Health::Error
            } else {
                Health::Reconciling
            };
            (*aspect, health)
        })
        .collect();
    if inputs.deprovisioning.is_some() {
        aspects.push((Aspect::Deletion, if inputs.removed { Health::Healthy } else { Health::Reconciling }));
    }
    let state = if failed {
        Health::Error
    } else if aspects.iter().all(|(_, h)| *h == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Reconciling
    };
    let transition = |condition_type: &str, status: &str| {
        previous
            .and_then(|p| p.conditions.iter().find(|c| c.condition_type == condition_type))
            .filter(|c| c.status == status)
            .map_or(now, |c| c.last_transition_time)
    };
    let mut conditions = Vec::new();
    let (ready_status, ready_reason) = match state {
        Health::Healthy => ("True", "Ready".to_owned()),
        Health::Reconciling => ("False", "Reconciling".to_owned()),
        Health::Error => ("False", reason.clone().unwrap_or_else(|| "Failed".into())),
    };
    conditions.push(Condition {
        condition_type: "Ready".into(),
        status: ready_status.into(),
        reason: ready_reason,
        message: format!(
            "desired generation {}, observed generation {observed_generation}",
            inputs.generation
        ),
        last_transition_time: transition("Ready", ready_status),
        observed_generation: inputs.generation,
    });
    for (aspect, health) in &aspects {
        let status = if *health == Health::Healthy { "True" } else { "False" };
        let reason = match health {
            Health::Healthy => "Applied".to_owned(),
            Health::Reconciling => "Reconciling".to_owned(),
            Health::Error => reason.clone().unwrap_or_else(|| "Failed".into()),
        };
        conditions.push(Condition {
            condition_type: aspect.condition_type().into(),
            status: status.into(),
            reason,
            message: String::new(),
            last_transition_time: transition(aspect.condition_type(), status),
            observed_generation: inputs.generation,
        });
    }
    let configuration_applied =
        aspects.iter().any(|(a, h)| *a == Aspect::Configuration && *h == Health::Healthy);
    let pending_restart =
        if configuration_applied { Vec::new() } else { inputs.restart_pending.iter().cloned().collect() };
    Status { state, aspects, reason, pending_restart, conditions }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn observed(generation: Option<u64>, phase: ObservedPhase) -> ObservedState {
        ObservedState {
            instance_id: Uuid::nil(),
            observed_generation: generation,
            desired_generation: 3,
            phase,
            ready_replicas: 3,
            desired_replicas: 1,
            running_version: None,
            config_hash: None,
            reason: (phase == ObservedPhase::Failed).then(|| "CrashLoopBackOff".into()),
            applied: None,
            network: None,
            rendered: None,
            users: None,
            config: None,
        }
    }

    static NONE: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

    fn inputs(observed: Option<&ObservedState>) -> Inputs<'_> {
        Inputs {
            generation: 3,
            changed: Generations {
                version: 1,
                resources: 3,
                configuration: 1,
                network_access: 1,
                credentials: 0,
                restore: 0,
                users: 0,
            },
            restart_pending: &NONE,
            deprovisioning: None,
            removed: false,
            observed,
        }
    }

    #[test]
    fn a_plan_change_reconciles_the_resources_aspect_only() {
        let seen = observed(Some(2), ObservedPhase::Progressing);
        let status = compute(inputs(Some(&seen)), None, Utc::now());
        assert_eq!(status.state, Health::Reconciling);
        assert_eq!(
            status.aspects,
            [
                (Aspect::Version, Health::Healthy),
                (Aspect::Resources, Health::Reconciling),
                (Aspect::Configuration, Health::Healthy),
                (Aspect::NetworkAccess, Health::Healthy),
                (Aspect::Credentials, Health::Healthy),
                (Aspect::Restore, Health::Healthy),
                (Aspect::Users, Health::Healthy)
            ]
        );
    }

    #[test]
    fn observed_generation_at_least_desired_is_healthy_and_failures_are_errors() {
        let seen = observed(Some(3), ObservedPhase::Ready);
        assert_eq!(compute(inputs(Some(&seen)), None, Utc::now()).state, Health::Healthy);
        let failing = observed(Some(2), ObservedPhase::Failed);
        let status = compute(inputs(Some(&failing)), None, Utc::now());
        assert_eq!(status.state, Health::Error);
        assert_eq!(status.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            compute(inputs(None), None, Utc::now()).state,
            Health::Reconciling,
            "nothing observed yet"
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap();
        let seen = observed(Some(3), ObservedPhase::Ready);
        let first = compute(inputs(Some(&seen)), None, t0);
        let again = compute(inputs(Some(&seen)), Some(&first), t1);
        assert_eq!(again.conditions[0].last_transition_time, t0);
        let failing = observed(Some(3), ObservedPhase::Failed);
        let flipped = compute(inputs(Some(&failing)), Some(&again), t1);
        assert_eq!(flipped.conditions[0].last_transition_time, t1);
    }
}

//! Version rollouts across the fleet, as platform admins announce and follow them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Service;

/// Body of `POST /v1/admin/rollouts`: every active instance of `service` at `from_version` is to run
/// `to_version`, an upgrade the catalog allows within one major, applied in each instance's maintenance
/// window (or earlier, when its owner applies pending maintenance now).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// the service whose instances move
    pub service: Service,
    /// the version they run
    #[schema(example = "2.6")]
    pub from_version: String,
    /// the version they are to run
    #[schema(example = "2.7")]
    pub to_version: String,
}

/// Where one instance is in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStep {
    /// runs `from_version`; the upgrade is not held for it yet
    Waiting,
    /// holds the upgrade for its maintenance window (`scheduled_for`)
    Held,
    /// the upgrade is applied; its cluster does not report running `to_version` yet
    Upgrading,
    /// its cluster reports running `to_version`
    Applied,
    /// the upgrade is applied and its cluster reports a failure (`reason`)
    Failed,
}

/// One instance a rollout concerns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutTarget {
    /// its project
    pub project: String,
    /// its id
    pub instance_id: Uuid,
    /// where it is
    pub step: RolloutStep,
    /// when a held upgrade is applied: its window's next opening (or its opening, while open)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// what its cluster reports, once failed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How many instances are at each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutProgress {
    /// every instance the rollout concerns (the sum of the others)
    pub targeted: usize,
    /// not held yet
    pub waiting: usize,
    /// held for their windows
    pub held: usize,
    /// applied, not yet reported running `to_version`
    pub upgrading: usize,
    /// reported running `to_version`
    pub applied: usize,
    /// failed after the upgrade was applied
    pub failed: usize,
}

/// A rollout and its progress across the fleet, read from the instances when asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// its id
    pub id: Uuid,
    /// the service whose instances move
    pub service: Service,
    /// the version they ran
    pub from_version: String,
    /// the version they are to run
    pub to_version: String,
    /// when it was announced
    pub created_at: DateTime<Utc>,
    /// who announced it
    pub actor: String,
    /// counts per step
    pub progress: RolloutProgress,
    /// every instance it concerns, by project and id
    pub instances: Vec<RolloutTarget>,
}

/// `GET /v1/admin/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    /// newest first
    pub rollouts: Vec<Rollout>,
}

impl RolloutProgress {
    /// The counts of `steps`.
    pub fn of(steps: impl IntoIterator<Item = RolloutStep>) -> Self {
        let mut progress = Self::default();
        for step in steps {
            progress.targeted += 1;
            *match step {
                RolloutStep::Waiting => &mut progress.waiting,
                RolloutStep::Held => &mut progress.held,
                RolloutStep::Upgrading => &mut progress.upgrading,
                RolloutStep::Applied => &mut progress.applied,
                RolloutStep::Failed => &mut progress.failed,
            } += 1;
        }
        progress
    }
}

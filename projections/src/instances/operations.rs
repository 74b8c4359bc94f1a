//! Operations: what a command did (stored once, immutable) and where it is (derived when read from its
//! instance's observed state).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{instance::Aspect, observed::ObservedState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use domain::OperationKind;

/// Where an operation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    /// its events are stored; the cluster has not yet observed the generation it produced
    InProgress,
    /// the cluster's agent observed the generation it produced (or, for a deprovision, that everything
    /// is gone); a newer change that superseded it before it was applied also completes it
    Succeeded,
    /// the cluster's agent reports a failure while applying it
    Failed {
        /// the agent's reason
        reason: String,
        /// whether an older generation is still running and usable
        instance_usable: bool,
        /// whether repeating the change may succeed
        update_repeatable: bool,
    },
}

/// An operation as stored: what it did, never where it is (that is derived from its instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// operation id (the command id)
    pub id: Uuid,
    /// what it did
    pub kind: OperationKind,
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// instance version it produced
    pub instance_version: u64,
    /// the applied aspects it changed, each at the version of its event; it completes when each is
    /// applied at that version or later (empty: when the whole instance is applied at
    /// `instance_version`)
    #[serde(default)]
    pub aspects: BTreeMap<Aspect, u64>,
    /// the backup it asked for or deleted, for backup operations (whose state is the backup's)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<Uuid>,
    /// stream sequence of its events
    pub sequence: u64,
    /// when it was committed
    pub created_at: DateTime<Utc>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationView {
    /// operation id (the command id)
    pub id: Uuid,
    /// what it did
    pub kind: OperationKind,
    /// where it is
    pub state: OperationState,
    /// project
    pub project: String,
    /// instance
    pub instance_id: Uuid,
    /// instance version it produced
    pub instance_version: u64,
    /// the backup it acts on, for backup operations
    pub backup_id: Option<Uuid>,
    /// stream sequence of its events
    pub sequence: u64,
    /// when it was committed
    pub created_at: DateTime<Utc>,
}

/// Where an operation is, given what the cluster's agent last reported.
pub(crate) fn operation_state(
    op: &OperationRecord,
    observed: Option<&ObservedState>,
    removed: bool,
) -> OperationState {
    if op.kind == OperationKind::Deprovision {
        return if removed { OperationState::Succeeded } else { OperationState::InProgress };
    }
    let Some(observed) = observed else { return OperationState::InProgress };
    // A newer change of the same aspect that was applied first also completes it (it superseded it);
    // a change of another aspect does not.
    let applied = if op.aspects.is_empty() {
        observed.observed_generation.unwrap_or(0) >= op.instance_version
    } else {
        op.aspects.iter().all(|(aspect, version)| observed.applied(*aspect) >= *version)
    };
    if applied {
        return OperationState::Succeeded;
    }
    if observed.phase == domain::observed::ObservedPhase::Failed
        && observed.desired_generation >= op.instance_version
    {
        return OperationState::Failed {
            reason: observed.reason.clone().unwrap_or_else(|| "Failed".into()),
            instance_usable: observed.observed_generation.is_some(),
            update_repeatable: true,
        };
    }
    OperationState::InProgress
}

/// Where a backup operation is: the backup's own state (a deletion is done once the artifact is gone).
pub(crate) fn backup_operation_state(
    op: &OperationRecord,
    backup: Option<&crate::backups::BackupView>,
) -> OperationState {
    use crate::backups::BackupState;
    let Some(backup) = backup else { return OperationState::InProgress };
    if op.kind == OperationKind::DeleteBackup {
        return if backup.state == BackupState::Deleted {
            OperationState::Succeeded
        } else {
            OperationState::InProgress
        };
    }
    match (&backup.reason, &backup.location) {
        (Some(reason), _) => {
            OperationState::Failed { reason: reason.clone(), instance_usable: true, update_repeatable: true }
        }
        (None, Some(_)) => OperationState::Succeeded,
        (None, None) => OperationState::InProgress,
    }
}

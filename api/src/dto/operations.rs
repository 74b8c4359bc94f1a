//! Operations: the asynchronous result of every write.

use chrono::{DateTime, Utc};
use projections::{OperationKind, OperationState, OperationView};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// What an operation does.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationType {
    /// creates an instance
    Provision,
    /// changes an instance
    Update,
    /// removes an instance
    Deprovision,
    /// replaces an instance's generated password
    RotateCredentials,
    /// backs an instance up (the operation's id is the backup's)
    Backup,
    /// deletes a backup
    DeleteBackup,
    /// restores an instance from a backup
    Restore,
}

impl From<OperationKind> for OperationType {
    fn from(kind: OperationKind) -> Self {
        match kind {
            OperationKind::Provision => Self::Provision,
            OperationKind::Update => Self::Update,
            OperationKind::Deprovision => Self::Deprovision,
            OperationKind::RotateCredentials => Self::RotateCredentials,
            OperationKind::Backup => Self::Backup,
            OperationKind::DeleteBackup => Self::DeleteBackup,
            OperationKind::Restore => Self::Restore,
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// accepted, not yet acted on
    Pending,
    /// being carried out
    InProgress,
    /// done
    Succeeded,
    /// failed; see `error`
    Failed,
}

/// Why an operation failed, in the manner of the Open Service Broker API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperationError {
    /// problem code
    pub code: String,
    /// what happened
    pub detail: String,
    /// the reason the cluster's agent reported (e.g. CrashLoopBackOff)
    pub reason: String,
    /// whether the instance can still be used
    pub instance_usable: bool,
    /// whether repeating the update may succeed
    pub update_repeatable: bool,
}

/// An asynchronous operation on an instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Operation {
    /// operation id
    pub id: Uuid,
    /// what it does
    #[serde(rename = "type")]
    pub operation_type: OperationType,
    /// where it is
    pub state: OperationStatus,
    /// the instance it acts on
    pub instance_id: Uuid,
    /// the instance version it produced (0 for backup operations, which change no instance)
    pub instance_version: u64,
    /// the backup it acts on, for backup operations
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<Uuid>,
    /// when it was accepted
    pub created_at: DateTime<Utc>,
    /// why it failed, when it did
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

impl From<&OperationView> for Operation {
    fn from(op: &OperationView) -> Self {
        Self {
            id: op.id,
            operation_type: op.kind.into(),
            state: match op.state {
                OperationState::InProgress => OperationStatus::InProgress,
                OperationState::Succeeded => OperationStatus::Succeeded,
                OperationState::Failed { .. } => OperationStatus::Failed,
            },
            instance_id: op.instance_id,
            instance_version: op.instance_version,
            backup_id: op.backup_id,
            created_at: op.created_at,
            error: match &op.state {
                OperationState::Failed { reason, instance_usable, update_repeatable } => {
                    Some(OperationError {
                        code: "apply_failed".into(),
                        detail: format!("the cluster reports {reason}"),
                        reason: reason.clone(),
                        instance_usable: *instance_usable,
                        update_repeatable: *update_repeatable,
                    })
                }
                _ => None,
            },
        }
    }
}

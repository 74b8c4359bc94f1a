//! Operations: the asynchronous result of every write.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What an operation does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
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
    /// applies what was held for the maintenance window (the window opened, or the customer asked)
    ApplyMaintenance,
    /// creates a user of an instance
    CreateUser,
    /// deletes a user of an instance (the engine revokes it)
    DeleteUser,
    /// gives a user of an instance a new password
    RotateUserPassword,
    /// a step of moving an instance to another cluster of its region (started by a platform admin or a
    /// drain; the later steps by the control plane's migrator)
    Migrate,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<Uuid>,
    /// when it was accepted
    pub created_at: DateTime<Utc>,
    /// why it failed, when it did
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

//! Backups as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// asked for; its cluster has not started it
    Requested,
    /// its cluster is making it
    Running,
    /// its artifact is in the object store
    Completed,
    /// it failed; see `error`
    Failed,
    /// its deletion was asked for
    Deleting,
    /// its artifact is gone
    Deleted,
}

/// A backup of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// backup id (also the id of the operation that asked for it)
    pub id: Uuid,
    /// the instance it is of
    pub instance_id: Uuid,
    /// the instance's name when the backup was asked for
    pub instance_name: String,
    /// service type
    pub service: String,
    /// service version it is of
    pub version: String,
    /// `manual`, or the schedule that made it
    pub trigger: String,
    /// where it is
    pub state: BackupState,
    /// when it was asked for
    pub requested_at: DateTime<Utc>,
    /// when its cluster started it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// when it completed or failed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// the artifact's size in bytes
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// the artifact's SHA-256, hex
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// the artifact's key in the backup bucket
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// how long it took, in milliseconds
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// why it failed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// whether the control plane found the object in the store as reported (absent: not checked yet)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// what the check found, when the object is not as reported
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_detail: Option<String>,
}

/// One page of an instance's backups.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupList {
    /// backups, newest first
    pub items: Vec<Backup>,
    /// pass as `page_token` to get the next page; absent on the last page
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

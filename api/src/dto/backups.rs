//! Backups as the API shows them.

use chrono::{DateTime, Utc};
use projections::{BackupState as ViewState, BackupView};
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

impl From<ViewState> for BackupState {
    fn from(state: ViewState) -> Self {
        match state {
            ViewState::Requested => Self::Requested,
            ViewState::Running => Self::Running,
            ViewState::Completed => Self::Completed,
            ViewState::Failed => Self::Failed,
            ViewState::Deleting => Self::Deleting,
            ViewState::Deleted => Self::Deleted,
        }
    }
}

impl From<BackupState> for ViewState {
    fn from(state: BackupState) -> Self {
        match state {
            BackupState::Requested => Self::Requested,
            BackupState::Running => Self::Running,
            BackupState::Completed => Self::Completed,
            BackupState::Failed => Self::Failed,
            BackupState::Deleting => Self::Deleting,
            BackupState::Deleted => Self::Deleted,
        }
    }
}

/// A backup of an instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// when it completed or failed
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// the artifact's size in bytes
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// the artifact's SHA-256, hex
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// the artifact's key in the backup bucket
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// how long it took, in milliseconds
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// why it failed
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// whether the control plane found the object in the store as reported (absent: not checked yet)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// what the check found, when the object is not as reported
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_detail: Option<String>,
}

impl From<&BackupView> for Backup {
    fn from(view: &BackupView) -> Self {
        Self {
            id: view.id,
            instance_id: view.source.instance_id,
            instance_name: view.source.instance_name.clone(),
            service: view.source.service.as_str().to_owned(),
            version: view.source.version.clone(),
            trigger: match &view.trigger {
                domain::BackupTrigger::Manual => "manual".to_owned(),
                domain::BackupTrigger::Schedule { schedule_id } => format!("schedule/{schedule_id}"),
            },
            state: view.state.into(),
            requested_at: view.requested_at,
            started_at: view.started_at,
            completed_at: view.finished_at,
            size_bytes: view.size_bytes,
            sha256: view.sha256.clone(),
            location: view.location.clone(),
            duration_ms: view.duration_ms,
            error: view.reason.clone(),
            verified: view.verified,
            verification_detail: view.verification_detail.clone(),
        }
    }
}

/// One page of an instance's backups.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupList {
    /// backups, newest first
    pub items: Vec<Backup>,
    /// pass as `page_token` to get the next page; absent on the last page
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

//! Why a command on an instance was refused: the errors the rules and the aggregate return.

use uuid::Uuid;

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// a field breaks a rule
    #[error("{field}: {message}")]
    Invalid {
        /// JSON pointer of the field, e.g. `/config/max_connections`
        field: String,
        /// machine name of the rule, e.g. `no_downgrade`
        rule: &'static str,
        /// what is wrong, for people
        message: String,
    },
    /// several fields break rules at once (configuration parameters are checked together, so that one
    /// answer names every bad one)
    #[error("{}", .0.iter().map(|v| format!("{}: {}", v.field, v.message)).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<Violation>),
    /// the name is held by another instance of the project
    #[error("name {name:?} is already used in this project by instance {holder}")]
    NameTaken {
        /// the requested name
        name: String,
        /// instance holding it
        holder: Uuid,
    },
    /// the instance does not exist
    #[error("instance not found")]
    NotFound,
    /// provision of an id that exists with a different spec
    #[error("instance already exists with a different specification")]
    AlreadyExists,
    /// the instance is being deprovisioned; only Deprovision is accepted
    #[error("instance is being deprovisioned; only deprovision is accepted")]
    Deprovisioning,
    /// deletion protection is on
    #[error("deletion protection is enabled; disable it first")]
    DeletionProtected,
    /// the ACL holds no entry with this CIDR
    #[error("the ACL has no entry {cidr}")]
    AclEntryNotFound {
        /// the CIDR asked for
        cidr: String,
    },
    /// the backup cannot be restored from
    #[error("backup {backup_id} cannot be restored from: {reason}")]
    BackupNotRestorable {
        /// the backup
        backup_id: Uuid,
        /// why
        reason: String,
    },
    /// the instance has no backup schedule with this id
    #[error("the instance has no backup schedule {id}")]
    ScheduleNotFound {
        /// the id asked for
        id: Uuid,
    },
    /// a user with this name exists
    #[error("the instance already has a user {name:?}")]
    UserExists {
        /// the name asked for
        name: String,
    },
    /// the instance has no user with this name
    #[error("the instance has no user {name:?}")]
    UserNotFound {
        /// the name asked for
        name: String,
    },
    /// the instance is moving to another cluster; changes wait until the move ended
    #[error("the instance is moving to cluster {to}; changes are accepted once the move ended")]
    Migrating {
        /// where it moves
        to: String,
    },
    /// no move with this id is in progress
    #[error("no migration {id} is in progress")]
    NoSuchMigration {
        /// the id asked for
        id: Uuid,
    },
    /// the name registry could not be reached; retryable
    #[error("name registry unavailable: {0}")]
    RegistryUnavailable(String),
}

/// One field breaking one rule (see [`InstanceError::InvalidFields`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the field
    pub field: String,
    /// machine name of the rule
    pub rule: &'static str,
    /// what is wrong, for people
    pub message: String,
}

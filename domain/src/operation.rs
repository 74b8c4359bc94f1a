//! What a command does, as its operation: recorded with each command's events (`Cp-Operation` and the
//! metadata's `operation`) and read back by projections into operations. One enum from the API to the read
//! side; a new kind is deployed to readers before any writer uses it, as a new event type is.

use serde::{Deserialize, Serialize};

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// creates the instance
    Provision,
    /// changes the instance
    Update,
    /// starts removing the instance
    Deprovision,
    /// replaces the instance's generated password
    RotateCredentials,
    /// backs the instance up
    Backup,
    /// deletes a backup
    DeleteBackup,
    /// restores an instance from a backup
    Restore,
    /// applies what was held for the maintenance window (the window opened, or the customer asked)
    ApplyMaintenance,
    /// creates a user of the instance
    CreateUser,
    /// deletes a user of the instance
    DeleteUser,
    /// gives a user of the instance a new password
    RotateUserPassword,
    /// a step of moving the instance to another cluster (`instance::migration`)
    Migrate,
}

impl OperationKind {
    /// The frozen wire form (metadata and header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Update => "update",
            Self::Deprovision => "deprovision",
            Self::RotateCredentials => "rotate_credentials",
            Self::Backup => "backup",
            Self::DeleteBackup => "delete_backup",
            Self::Restore => "restore",
            Self::ApplyMaintenance => "apply_maintenance",
            Self::CreateUser => "create_user",
            Self::DeleteUser => "delete_user",
            Self::RotateUserPassword => "rotate_user_password",
            Self::Migrate => "migrate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OperationKind;

    #[test]
    fn wire_forms_are_frozen() {
        for (kind, wire) in [
            (OperationKind::Provision, "provision"),
            (OperationKind::Update, "update"),
            (OperationKind::Deprovision, "deprovision"),
            (OperationKind::RotateCredentials, "rotate_credentials"),
            (OperationKind::Backup, "backup"),
            (OperationKind::DeleteBackup, "delete_backup"),
            (OperationKind::Restore, "restore"),
            (OperationKind::ApplyMaintenance, "apply_maintenance"),
            (OperationKind::CreateUser, "create_user"),
            (OperationKind::DeleteUser, "delete_user"),
            (OperationKind::RotateUserPassword, "rotate_user_password"),
            (OperationKind::Migrate, "migrate"),
        ] {
            assert_eq!(kind.as_str(), wire);
            assert_eq!(serde_json::to_value(kind).unwrap(), wire);
            assert_eq!(serde_json::from_value::<OperationKind>(wire.into()).unwrap(), kind);
        }
    }
}

//! Restoring an instance from a backup: in place (a command on the instance) or into a new instance (a
//! provision that names its source). Either way the instance records the backup it is restored from, and
//! the restore is an aspect of its own: applied once the cluster has loaded the backup.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::InstanceError;
use crate::catalog::{ServiceType, Version};

/// A backup as the caller knows it, for the rules of a restore (the aggregate does not hold backups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    /// the backup
    pub backup_id: Uuid,
    /// the instance it is of (may be deprovisioned)
    pub instance_id: Uuid,
    /// its service
    pub service: ServiceType,
    /// the service version it is of
    pub version: String,
    /// its object's key in the backup bucket, once it completed
    pub location: Option<String>,
    /// why it cannot be restored from (failed, being deleted, deleted, or its object not as reported);
    /// `None` when it can
    pub unusable: Option<String>,
}

/// What an instance records of the restore it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// the backup
    pub backup_id: Uuid,
    /// the instance the backup is of
    pub source_instance_id: Uuid,
    /// its object's key in the backup bucket
    pub location: String,
}

/// Checks that `source` can be restored into an instance of `service` at `version`.
pub(super) fn check(
    source: &RestoreSource,
    service: ServiceType,
    version: &str,
) -> Result<RestoreSpec, InstanceError> {
    if let Some(reason) = &source.unusable {
        return Err(InstanceError::BackupNotRestorable {
            backup_id: source.backup_id,
            reason: reason.clone(),
        });
    }
    let Some(location) = &source.location else {
        return Err(InstanceError::BackupNotRestorable {
            backup_id: source.backup_id,
            reason: "it has not completed".into(),
        });
    };
    if source.service != service {
        return Err(super::rules::invalid(
            "/backup_id",
            "same_service",
            format!(
                "the backup is of a {} instance; this one is {}",
                source.service.as_str(),
                service.as_str()
            ),
        ));
    }
    // A dump loads into the same version or a newer one, never into an older one.
    let newer = match (source.version.parse::<Version>(), version.parse::<Version>()) {
        (Ok(backup), Ok(target)) => backup > target,
        _ => source.version != version,
    };
    if newer {
        return Err(super::rules::invalid(
            "/backup_id",
            "restore_version",
            format!(
                "the backup is of version {}, newer than {version}: restore into {} or later",
                source.version, source.version
            ),
        ));
    }
    Ok(RestoreSpec {
        backup_id: source.backup_id,
        source_instance_id: source.instance_id,
        location: location.clone(),
    })
}

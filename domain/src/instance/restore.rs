//! Restoring an instance from a backup: in place (a command on the instance) or into a new instance (a
//! provision that names its source). Either way the instance records the backup it is restored from, and
//! the restore is an aspect of its own: applied once the cluster has loaded the backup.
//!
//! PostgreSQL is restored only into a new instance: CloudNativePG restores by bootstrapping a new cluster
//! from the object store, never into a running one. A new PostgreSQL instance may also be a fork: the
//! source recovered to a point in time within its recoverable window, from the first moment a completed
//! base backup covers to the last moment whose WAL is surely archived (the API works it out:
//! `api::routes::restore`). A PostgreSQL backup restores into its own major only.

use chrono::{DateTime, SecondsFormat, Utc};
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
    /// a fork: the point in time to recover to, and the source's recoverable window; the backup is then
    /// the newest completed one taken before that point
    pub point_in_time: Option<PointInTime>,
}

/// A fork's target, and what the source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointInTime {
    /// the moment to recover to
    pub at: DateTime<Utc>,
    /// from the end of the source's oldest completed base backup to the present (or to its removal);
    /// `None` when it has no completed backup
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Where the rules report a fork's target time.
pub const POINT_IN_TIME_FIELD: &str = "/restore_from/point_in_time";

/// What an instance records of the restore it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// the backup
    pub backup_id: Uuid,
    /// the instance the backup is of
    pub source_instance_id: Uuid,
    /// its object's key in the backup bucket
    pub location: String,
    /// a fork's point in time (PostgreSQL); absent: the backup as it was
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<DateTime<Utc>>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Checks that `source` can be restored into an instance of `service` at `version`.
pub(super) fn check(
    source: &RestoreSource,
    service: ServiceType,
    version: &str,
) -> Result<RestoreSpec, InstanceError> {
    if let Some(target) = &source.point_in_time {
        if service != ServiceType::Postgresql {
            return Err(super::rules::invalid(
                POINT_IN_TIME_FIELD,
                "point_in_time_postgresql",
                "only PostgreSQL instances are recovered to a point in time; restore another service from a backup",
            ));
        }
        match target.window {
            None => {
                return Err(super::rules::invalid(
                    POINT_IN_TIME_FIELD,
                    "recovery_window",
                    "the source instance has no completed backup, so it has no recoverable window yet",
                ));
            }
            Some((first, last)) if target.at < first || target.at > last => {
                return Err(super::rules::invalid(
                    POINT_IN_TIME_FIELD,
                    "recovery_window",
                    format!(
                        "{} is outside the source's recoverable window, from {} to {}",
                        stamp(target.at),
                        stamp(first),
                        stamp(last)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
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
    // A PostgreSQL backup is physical (a base backup and WAL): it starts only on its own major, and WAL
    // does not replay across majors (CloudNativePG v1.30.0 `docs/src/postgres_upgrades.md`, "Backup and WAL
    // Archive Considerations": PITR is not supported across major version boundaries). A dump of the
    // other services loads into a newer version; a PostgreSQL restore or fork keeps the major.
    if service == ServiceType::Postgresql && major(&source.version) != major(version) {
        return Err(super::rules::invalid(
            "/version",
            "restore_major",
            format!(
                "the backup is of PostgreSQL {}, a physical backup that starts only on its own major: make the \
                 new instance {} and upgrade it afterwards",
                source.version,
                major(&source.version)
            ),
        ));
    }
    Ok(RestoreSpec {
        backup_id: source.backup_id,
        source_instance_id: source.instance_id,
        location: location.clone(),
        target_time: source.point_in_time.as_ref().map(|p| p.at),
    })
}

/// A version's major: what comes before the first dot (PostgreSQL's versions in the catalog are majors).
fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// A restore into the running instance: PostgreSQL's is refused (see the module's documentation).
pub(super) fn check_in_place(
    source: &RestoreSource,
    service: ServiceType,
    version: &str,
) -> Result<RestoreSpec, InstanceError> {
    if service == ServiceType::Postgresql {
        return Err(super::rules::invalid(
            "/backup_id",
            "restore_in_place",
            "CloudNativePG restores only by bootstrapping a new cluster: provision a new instance with \
             restore_from naming the backup (or the instance and a point_in_time)",
        ));
    }
    check(source, service, version)
}

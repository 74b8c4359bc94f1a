//! Where a backup's artifact may lie in the backup bucket: under its own instance's prefix, and nowhere
//! else. A cluster reports the location; the control plane verifies and deletes what lies there with keys
//! that reach every tenant's backups, so a location is a claim to check, never an address to trust
//! (an empty or short one would name other tenants' backups).

use uuid::Uuid;

use super::{BackupSource, object_key};
use crate::ServiceType;

/// Why a reported location is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// a one-object backup lies at exactly its own key
    #[error("{found:?} is not this backup's object key {expected:?}")]
    NotTheObjectKey {
        /// the reported location
        found: String,
        /// `<project>/<instance-id>/<backup-id>`
        expected: String,
    },
    /// a PostgreSQL base backup lies at `<project>/<instance-id>/<server-name>/base/<barman-backup-id>`
    #[error(
        "{found:?} is not a base backup of this instance (<project>/<instance-id>/<server-name>/base/<backup-id>)"
    )]
    NotUnderTheInstance {
        /// the reported location
        found: String,
    },
}

/// Checks that `location`, reported for backup `backup_id` of `source`, names that backup's own artifact.
///
/// - MongoDB, InfluxDB and Grafana backups are one object at [`object_key`], exactly.
/// - A PostgreSQL backup is a Barman base backup the CloudNativePG plugin writes under the instance's
///   `ObjectStore` path (`<project>/<instance-id>`, see the agent's `render/barman.rs`) as
///   `<server-name>/base/<backup-id>` (Barman's layout, `barman/cloud.py` `CloudBackupCatalog`); both names
///   must be plain path segments, so the prefix cannot reach beyond the one backup.
pub fn check_location(source: &BackupSource, backup_id: Uuid, location: &str) -> Result<(), LocationError> {
    if source.service != ServiceType::Postgresql {
        let expected = object_key(&source.project, source.instance_id, backup_id);
        return if location == expected {
            Ok(())
        } else {
            Err(LocationError::NotTheObjectKey { found: location.to_owned(), expected })
        };
    }
    let refused = || LocationError::NotUnderTheInstance { found: location.to_owned() };
    let instance = source.instance_id.to_string();
    match location.split('/').collect::<Vec<_>>().as_slice() {
        [project, id, server, "base", barman_id]
            if *project == source.project
                && *id == instance
                && plain_segment(server)
                && plain_segment(barman_id) =>
        {
            Ok(())
        }
        _ => Err(refused()),
    }
}

/// A path segment that names one thing: not empty, not `.` or `..`, letters, digits, `-`, `_` and `.` only.
fn plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(service: ServiceType) -> BackupSource {
        BackupSource {
            project: "acme".into(),
            instance_id: Uuid::from_u128(7),
            instance_name: "orders".into(),
            cluster: "eu-1".into(),
            service,
            version: "16".into(),
        }
    }

    #[test]
    fn a_one_object_backup_lies_at_exactly_its_own_key() {
        let source = source(ServiceType::Mongodb);
        let backup = Uuid::from_u128(9);
        assert_eq!(check_location(&source, backup, &object_key("acme", source.instance_id, backup)), Ok(()));
        for foreign in [
            String::new(),
            "acme".into(),
            "acme/".into(),
            format!("acme/{}", source.instance_id),
            object_key("acme", source.instance_id, Uuid::from_u128(10)),
            object_key("other", source.instance_id, backup),
            format!("{}/extra", object_key("acme", source.instance_id, backup)),
        ] {
            assert!(check_location(&source, backup, &foreign).is_err(), "{foreign:?} was accepted");
        }
    }

    #[test]
    fn a_base_backup_lies_under_its_own_instance_and_names_one_backup() {
        let source = source(ServiceType::Postgresql);
        let id = source.instance_id;
        let backup = Uuid::from_u128(9);
        assert_eq!(
            check_location(&source, backup, &format!("acme/{id}/orders/base/20261201T013000")),
            Ok(())
        );
        for foreign in [
            String::new(),
            format!("acme/{id}"),
            format!("acme/{id}/"),
            format!("acme/{id}/orders/base/"),
            format!("acme/{id}/orders/base/.."),
            format!("acme/{id}/../base/x"),
            format!("acme/{}/orders/base/x", Uuid::from_u128(8)),
            format!("other/{id}/orders/base/x"),
            format!("acme/{id}/orders/wals/x"),
            format!("acme/{id}/orders/base/x/y"),
        ] {
            assert!(check_location(&source, backup, &foreign).is_err(), "{foreign:?} was accepted");
        }
    }
}

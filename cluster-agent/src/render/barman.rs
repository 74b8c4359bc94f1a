//! PostgreSQL backups the way CloudNativePG makes them now: through the Barman Cloud plugin
//! (plugin-barman-cloud v0.14.0, `web/docs/usage.md`; the in-tree `barmanObjectStore` is deprecated since
//! CloudNativePG 1.26).
//!
//! - An `ObjectStore` (`barmancloud.cnpg.io/v1`, `api/v1/objectstore_types.go`) per instance names where
//!   its base backups and WAL go: `s3://<bucket>/<project>/<instance-id>`, beside the other services'
//!   backups, with the instance's own keys from its store Secret (`crate::store_access`; a restore's
//!   origin store reads with the same keys, granted read access to the source's prefix). Barman adds `<serverName>/base/<backup-id>/`
//!   and `<serverName>/wals/` under it; the server name is the Cluster's name.
//! - The Cluster names it in `spec.plugins` as its WAL archiver, so WAL is archived continuously and any
//!   moment after the first base backup can be recovered.
//! - A backup is a `Backup` (`postgresql.cnpg.io/v1`, `api/v1/backup_types.go`) with `method: plugin`.
//! - A restore or a fork is a new Cluster bootstrapped with `bootstrap.recovery` from an external cluster
//!   served by the plugin, reading the source instance's `ObjectStore` path (`serverName` is the source's
//!   Cluster name), with `recoveryTarget.backupID` and either `targetTime` (a point in time) or
//!   `targetImmediate` (the backup as it was).

use kube::ResourceExt as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Child, ChildKind,
    backup::{StoreTarget, store_secret_name},
    labels,
};
use crate::crd::{ManagedInstance, RestoreTarget};

/// The plugin's name, as a Cluster and a Backup refer to it.
pub const PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
/// The external cluster a restore reads from.
const ORIGIN: &str = "origin";

/// Name of the `ObjectStore` an instance archives to.
pub fn object_store_name(mi: &ManagedInstance) -> String {
    format!("{}-backups", mi.name_any())
}

fn origin_store_name(mi: &ManagedInstance) -> String {
    format!("{}-origin", mi.name_any())
}

/// An `ObjectStore` at `prefix` of the store's bucket.
fn object_store(mi: &ManagedInstance, name: &str, store: &StoreTarget, prefix: &str) -> Child {
    let object = json!({
        "apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
        "metadata": {"name": name, "namespace": mi.namespace(), "labels": labels(mi)},
        "spec": {"configuration": {
            "destinationPath": format!("s3://{}/{prefix}", store.bucket),
            "endpointURL": store.endpoint,
            "s3Credentials": {
                "accessKeyId": {"name": store_secret_name(mi), "key": "access-key-id"},
                "secretAccessKey": {"name": store_secret_name(mi), "key": "secret-access-key"},
            },
            "wal": {"compression": "gzip"},
        }},
    });
    Child { kind: ChildKind::ObjectStore, name: name.to_owned(), object }
}

/// Where a PostgreSQL backup lies, parsed from its location
/// (`<project>/<instance-id>/<server-name>/base/<barman-backup-id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup<'a> {
    /// `<project>/<instance-id>`: the source instance's `ObjectStore` path in the bucket
    pub prefix: String,
    /// the source's server name (its Cluster's name)
    pub server_name: &'a str,
    /// Barman's backup id
    pub backup_id: &'a str,
}

/// Parses a PostgreSQL backup's location; `None` when it is not one.
pub fn base_backup(location: &str) -> Option<BaseBackup<'_>> {
    let parts: Vec<&str> = location.split('/').collect();
    match parts.as_slice() {
        [project, instance, server_name, "base", backup_id] => {
            Some(BaseBackup { prefix: format!("{project}/{instance}"), server_name, backup_id })
        }
        _ => None,
    }
}

/// Adds continuous archiving (and, for an instance made from a backup, its recovery) to the Cluster
/// `cluster` renders for `mi`; returns the `ObjectStore`s that takes.
pub fn archive_and_recover(
    mi: &ManagedInstance,
    cluster: &mut Value,
    store: Option<&StoreTarget>,
) -> Vec<Child> {
    let Some(store) = store else { return Vec::new() };
    let mut children = Vec::new();
    let own = object_store_name(mi);
    cluster["spec"]["plugins"] =
        json!([{"name": PLUGIN, "isWALArchiver": true, "parameters": {"barmanObjectName": own}}]);
    // After an upgrade to another major, a server name of its own (CloudNativePG v1.30.0
    // `docs/src/postgres_upgrades.md`, "Manual archive path separation with the Barman Cloud plugin": change
    // `serverName` with the image); the plugin's default is the Cluster's name (plugin-barman-cloud v0.14.0
    // `internal/cnpgi/operator/config/config.go`).
    if let Some(server) = &mi.spec.archive_server {
        cluster["spec"]["plugins"][0]["parameters"]["serverName"] = json!(server);
    }
    children.push(object_store(mi, &own, store, &format!("{}/{}", mi.spec.project, mi.spec.instance_id)));
    if let Some(restore) = &mi.spec.restore
        && let Some(base) = base_backup(&restore.location)
    {
        let origin = origin_store_name(mi);
        children.push(object_store(mi, &origin, store, &base.prefix));
        cluster["spec"]["bootstrap"] =
            json!({"recovery": {"source": ORIGIN, "recoveryTarget": recovery_target(restore, &base)}});
        cluster["spec"]["externalClusters"] = json!([{"name": ORIGIN, "plugin": {"name": PLUGIN,
            "parameters": {"barmanObjectName": origin, "serverName": base.server_name}}}]);
    }
    children
}

/// CloudNativePG's `RecoveryTarget` (v1.30.0 `api/v1/cluster_types.go`): start from the named base backup
/// and stop at the point in time, or as soon as the backup's state is consistent.
fn recovery_target(restore: &RestoreTarget, base: &BaseBackup<'_>) -> Value {
    match &restore.target_time {
        Some(time) => json!({"backupID": base.backup_id, "targetTime": time}),
        None => json!({"backupID": base.backup_id, "targetImmediate": true}),
    }
}

/// Name of a PostgreSQL backup's `Backup` object.
pub fn backup_name(backup_id: Uuid) -> String {
    format!("backup-{}", backup_id.simple())
}

/// The `Backup` that makes backup `backup_id` of `mi` through the plugin.
pub fn backup(mi: &ManagedInstance, backup_id: Uuid) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
        "metadata": {"name": backup_name(backup_id), "namespace": mi.namespace(), "labels": {
            super::backup::BACKUP_LABEL: backup_id.to_string(),
            super::backup::BACKUP_OF_LABEL: mi.spec.instance_id,
            "app.kubernetes.io/part-of": "cp"}},
        "spec": {"cluster": {"name": mi.name_any()}, "method": "plugin", "pluginConfiguration": {"name": PLUGIN}},
    })
}

/// What a finished `Backup` reports: `Ok((location, milliseconds taken))` or `Err(why)`; `None` while it
/// runs. Its status (v1.30.0 `api/v1/backup_types.go`, `BackupStatus`): `phase`, `serverName` and
/// `backupId` (Barman's), `startedAt`, `stoppedAt`, `error`. Of the phases `backup_types.go` names, only
/// `pending`, `started`, `running` (`IsInProgress`, api/v1/backup_funcs.go) and `finalizing` (a volume
/// snapshot waiting to be usable) are on the way to `completed`. `failed` is final; so, for this
/// backup, are `invalid backup definition` (set by the admission checks with the reason in `error`:
/// `SetAdmissionError`) and `walArchivingFailing` (the instance gives up on the backup when WAL
/// archiving does not work: pkg/management/postgres/backup.go, `Start`). An unknown phase is waited on.
pub fn outcome(backup: &Value, project: &str, instance_id: Uuid) -> Option<Result<(String, u64), String>> {
    let status = &backup["status"];
    match status["phase"].as_str()? {
        "completed" => {
            let server = status["serverName"].as_str().or(backup["spec"]["cluster"]["name"].as_str());
            let (Some(server), Some(id)) = (server, status["backupId"].as_str()) else {
                return Some(Err("the Backup completed without naming its server and backup id".into()));
            };
            let time = |field: &str| {
                status[field].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let duration = match (time("startedAt"), time("stoppedAt")) {
                (Some(start), Some(stop)) => (stop - start).num_milliseconds().max(0) as u64,
                _ => 0,
            };
            Some(Ok((format!("{project}/{instance_id}/{server}/base/{id}"), duration)))
        }
        phase @ ("failed" | "invalid backup definition" | "walArchivingFailing") => {
            let why = status["error"].as_str().filter(|e| !e.is_empty());
            Some(Err(match (phase, why) {
                ("failed", Some(why)) => why.to_owned(),
                ("failed", None) => "the Backup failed".to_owned(),
                (phase, Some(why)) => format!("{phase}: {why}"),
                (phase, None) => phase.to_owned(),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_names_the_source_s_path_server_and_backup() {
        let location = "acme/0193c0de-0000-7000-8000-000000000000/orders/base/20261201T013000";
        assert_eq!(
            base_backup(location),
            Some(BaseBackup {
                prefix: "acme/0193c0de-0000-7000-8000-000000000000".into(),
                server_name: "orders",
                backup_id: "20261201T013000",
            })
        );
        assert_eq!(base_backup("acme/0193c0de-0000-7000-8000-000000000000/0193c0de"), None, "a dump's key");
    }

    #[test]
    fn a_finished_backup_s_status_gives_its_location_or_its_error() {
        let id = Uuid::nil();
        let completed = json!({"spec": {"cluster": {"name": "orders"}}, "status": {"phase": "completed",
            "serverName": "orders", "backupId": "20261201T013000",
            "startedAt": "2026-12-01T01:30:00Z", "stoppedAt": "2026-12-01T01:30:02Z"}});
        assert_eq!(
            outcome(&completed, "acme", id),
            Some(Ok((format!("acme/{id}/orders/base/20261201T013000"), 2000)))
        );
        let failed = json!({"status": {"phase": "failed", "error": "can't upload: AccessDenied"}});
        assert_eq!(outcome(&failed, "acme", id), Some(Err("can't upload: AccessDenied".into())));
        assert_eq!(outcome(&json!({"status": {"phase": "running"}}), "acme", id), None);
    }

    /// CloudNativePG v1.30.0 api/v1/backup_types.go: a Backup the admission checks refuse stays in phase
    /// `invalid backup definition` with the reason in `error` (backup_funcs.go `SetAdmissionError`), and
    /// one whose instance finds WAL archiving broken stays in `walArchivingFailing`
    /// (pkg/management/postgres/backup.go): neither ever reaches `completed`, so each is a failure.
    #[test]
    fn a_backup_that_can_never_complete_is_a_failure() {
        let id = Uuid::nil();
        let invalid = json!({"status": {"phase": "invalid backup definition",
            "error": "the cluster has no backup configuration"}});
        assert_eq!(
            outcome(&invalid, "acme", id),
            Some(Err("invalid backup definition: the cluster has no backup configuration".into()))
        );
        let archiving = json!({"status": {"phase": "walArchivingFailing"}});
        assert_eq!(outcome(&archiving, "acme", id), Some(Err("walArchivingFailing".into())));
        for phase in ["pending", "started", "running", "finalizing"] {
            assert_eq!(outcome(&json!({"status": {"phase": phase}}), "acme", id), None, "{phase}");
        }
    }
}

//! CloudNativePG's Barman Cloud plugin, played for real where it matters: a `Backup` with `method: plugin`
//! writes a base backup into the object store its Cluster archives to (the Cluster's `spec.plugins`
//! names the `ObjectStore`, whose `destinationPath`, `endpointURL` and `s3Credentials` say where and
//! with which keys; plugin-barman-cloud v0.14.0 `api/v1/objectstore_types.go`), in Barman's layout
//! `<destinationPath>/<serverName>/base/<backupId>/{data.tar,backup.info}` with the WAL segment it needs
//! under `<serverName>/wals/`, and reports the status
//! CloudNativePG reports (v1.30.0 `api/v1/backup_types.go`, `BackupStatus`).

use chrono::{SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::server::Simulator;

const PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// Takes the base backup `backup` asks for; the `Backup`'s status as CloudNativePG would report it.
pub(crate) async fn run(sim: &Simulator, namespace: &str, backup: &Value, fails: bool) -> Value {
    let started = Utc::now();
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let failed = |error: String| {
        json!({"phase": "failed", "method": "plugin", "error": error, "startedAt": stamp(started),
               "stoppedAt": stamp(Utc::now())})
    };
    if fails {
        return failed("simulated failure: barman-cloud-backup exited with status 1".into());
    }
    let server = backup["spec"]["cluster"]["name"].as_str().unwrap_or_default().to_owned();
    let (store, prefix, destination) = match store_of(sim, namespace, &server) {
        Ok(found) => found,
        Err(why) => return failed(why),
    };
    // Barman names a backup by its start, to the second: two in the same second take the next free one.
    let mut id = String::new();
    for offset in 0..600 {
        let candidate = (started + TimeDelta::seconds(offset)).format("%Y%m%dT%H%M%S").to_string();
        match store.list(&format!("{prefix}/{server}/base/{candidate}")).await {
            Ok(found) if found.is_empty() => {
                id = candidate;
                break;
            }
            Ok(_) => {}
            Err(e) => return failed(format!("can't list the object store: {e}")),
        }
    }
    // The WAL segment the backup needs, archived as Barman archives it (`<server>/wals/<timeline and
    // log>/<segment>`; Barman 3.19.1 `barman/cloud.py`): the one after the newest archived so far.
    let wals = format!("{prefix}/{server}/wals/0000000100000000");
    let next = match store.list(&wals).await {
        Ok(found) => found
            .iter()
            .filter_map(|o| o.key.rsplit('/').next())
            .filter(|name| name.len() == 24)
            .filter_map(|name| u64::from_str_radix(&name[16..], 16).ok())
            .max()
            .map_or(2, |n| n + 1),
        Err(e) => return failed(format!("can't list the object store: {e}")),
    };
    let wal = format!("0000000100000000{next:08X}");
    let base = format!("{prefix}/{server}/base/{id}");
    let data = format!("simulated base backup {id} of {namespace}/{server}\n").repeat(128).into_bytes();
    // `backup.info` as Barman writes it (`barman/infofile.py`: `key=value` lines).
    let info = format!(
        "backup_id={id}\nbackup_name={}\nstatus=DONE\nserver_name={server}\nbegin_wal={wal}\nend_wal={wal}\ntimeline=1\n",
        backup["metadata"]["name"].as_str().unwrap_or_default()
    )
    .into_bytes();
    let segment = format!("simulated WAL {wal}\n").repeat(64).into_bytes();
    for (key, content) in [
        (format!("{wals}/{wal}"), segment),
        (format!("{base}/data.tar"), data),
        (format!("{base}/backup.info"), info),
    ] {
        if let Err(e) = store.put(&key, content).await {
            return failed(format!("can't upload {key}: {e}"));
        }
    }
    json!({"phase": "completed", "method": "plugin", "serverName": server, "backupId": id,
           "destinationPath": destination, "startedAt": stamp(started), "stoppedAt": stamp(Utc::now()),
           "beginWal": wal, "endWal": wal})
}

/// The store, key prefix and `destinationPath` of the `ObjectStore` Cluster `cluster` archives to.
fn store_of(
    sim: &Simulator,
    namespace: &str,
    cluster: &str,
) -> Result<(backup_store::BackupStore, String, String), String> {
    let store = sim.store();
    let get = |group: &str, plural: &str, name: &str| -> Result<Value, String> {
        let ty = store.resource_type(group, "v1", plural).ok_or(format!("no {plural}"))?;
        store.get(&ty, namespace, name).ok_or(format!("{plural} \"{name}\" not found"))
    };
    let cluster = get("postgresql.cnpg.io", "clusters", cluster)?;
    let plugin = cluster["spec"]["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == PLUGIN && p["isWALArchiver"] == true))
        .ok_or("the Cluster has no WAL archiver plugin")?;
    let object_store = plugin["parameters"]["barmanObjectName"].as_str().ok_or("no barmanObjectName")?;
    let configuration =
        get("barmancloud.cnpg.io", "objectstores", object_store)?["spec"]["configuration"].clone();
    // The store's lock is released before the Secret is read (it takes the lock again).
    drop(store);
    let destination = configuration["destinationPath"].as_str().ok_or("no destinationPath")?.to_owned();
    let (bucket, prefix) = destination
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or(format!("destinationPath {destination} is not s3://<bucket>/<path>"))?;
    let key = |field: &str| -> Result<String, String> {
        let reference = &configuration["s3Credentials"][field];
        let (name, key) =
            (reference["name"].as_str().unwrap_or_default(), reference["key"].as_str().unwrap_or_default());
        crate::backup_job::secret_value(sim, namespace, name, key)
    };
    let config = backup_store::StoreConfig {
        endpoint: configuration["endpointURL"].as_str().ok_or("no endpointURL")?.to_owned(),
        bucket: bucket.to_owned(),
        region: "us-east-1".into(),
        access_key_id: key("accessKeyId")?,
        secret_access_key: key("secretAccessKey")?,
    };
    let client = backup_store::BackupStore::new(&config).map_err(|e| e.to_string())?;
    Ok((client, prefix.trim_end_matches('/').to_owned(), destination))
}

//! What a backup Job does, played for real where it matters: the artifact is written to the object store
//! the Job's Secret names (a real S3 server in tests), and the upload container's termination message
//! says what was uploaded, as the agent's Job writes it (cluster-agent `render::backup`).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::server::Simulator;

/// Uploads a stand-in artifact for `job`; `Ok(termination message)` or `Err(why)` as the Job would fail.
pub(crate) async fn run(sim: &Simulator, namespace: &str, job: &Value) -> Result<String, String> {
    let (store, key) = store_of(sim, namespace, job, "containers", "upload")?;
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let artifact = format!("simulated dump of {namespace}/{name}\n").repeat(64).into_bytes();
    let (size, sha256) = store.put(&key, artifact).await.map_err(|e| format!("upload failed: {e}"))?;
    Ok(json!({"size": size, "sha256": sha256}).to_string())
}

/// Fetches the artifact a restore Job loads; `Err(why)` when the store does not have it.
pub(crate) async fn download(sim: &Simulator, namespace: &str, job: &Value) -> Result<String, String> {
    let (store, key) = store_of(sim, namespace, job, "initContainers", "download")?;
    match store.verify(&key, 0, "").await {
        Ok(backup_store::Verification::Missing) => Err(format!("download failed: no object {key}")),
        Ok(_) => Ok("{}".to_owned()),
        Err(e) => Err(format!("download failed: {e}")),
    }
}

/// What a StatefulSet's `restore` init container (the agent's Grafana restore) finds: `Err(why)` when
/// the object it downloads is not in the store.
pub(crate) async fn restore_init(sim: &Simulator, namespace: &str, set: &Value) -> Result<(), String> {
    let (store, key) = store_of(sim, namespace, set, "initContainers", "restore")?;
    match store.verify(&key, 0, "").await {
        Ok(backup_store::Verification::Missing) => Err(format!("download failed: no object {key}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("download failed: {e}")),
    }
}

/// The value under `key` of Secret `name` (its `data`, decoded).
pub(crate) fn secret_value(
    sim: &Simulator,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, String> {
    let secret = {
        let store = sim.store();
        let ty = store.resource_type("", "v1", "secrets").ok_or("no secrets")?;
        store.get(&ty, namespace, name).ok_or(format!("secret \"{name}\" not found"))?
    };
    let data = secret["data"][key].as_str().ok_or(format!("no {key} in Secret {name}"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The store and object key a Job's container works with, from its environment and the store Secret.
fn store_of(
    sim: &Simulator,
    namespace: &str,
    job: &Value,
    list: &str,
    name: &str,
) -> Result<(backup_store::BackupStore, String), String> {
    let container = job["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .ok_or(format!("the Job has no {name} container"))?;
    let env = |name: &str| {
        container["env"].as_array().and_then(|env| env.iter().find(|e| e["name"] == name)).cloned()
    };
    let key = env("KEY").and_then(|e| e["value"].as_str().map(str::to_owned)).ok_or("no KEY")?;
    let secret_name = env("ENDPOINT")
        .and_then(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str().map(str::to_owned))
        .ok_or("no store Secret")?;
    let field = |key: &str| secret_value(sim, namespace, &secret_name, key);
    let config = backup_store::StoreConfig {
        endpoint: field("endpoint")?,
        bucket: field("bucket")?,
        region: "us-east-1".into(),
        access_key_id: field("access-key-id")?,
        secret_access_key: field("secret-access-key")?,
    };
    let store = backup_store::BackupStore::new(&config).map_err(|e| e.to_string())?;
    Ok((store, key))
}

/// The Job's pod, finished, with the upload container's termination message (labelled as the Job
/// controller labels its pods: `batch.kubernetes.io/job-name`).
pub(crate) fn completed_pod(
    store: &mut crate::store::Store,
    namespace: &str,
    job_object: &Value,
    message: &str,
) {
    let Some(ty) = store.types().iter().find(|t| t.key() == "pods").cloned() else { return };
    let job = job_object["metadata"]["name"].as_str().unwrap_or_default();
    let pod = format!("{job}-done");
    let object = json!({"metadata": {"name": pod, "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
            "uid": job_object["metadata"]["uid"], "controller": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "upload", "image": "amazon/aws-cli"}]}});
    if store.create(&ty, namespace, object).is_ok() {
        let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "upload", "ready": false,
            "restartCount": 0, "image": "amazon/aws-cli",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message}}}]}});
        let _ = store.merge_patch(&ty, namespace, &pod, &status, true);
    }
}

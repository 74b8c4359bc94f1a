//! The MongoDB and InfluxDB backup and restore Jobs, run as a pod would run them: each container's
//! script under `sh`, init containers first and the next container only when the previous one succeeded
//! (Kubernetes docs, *Init Containers*: "If a Pod's init container fails … and the Pod has a
//! restartPolicy of Never, Kubernetes treats the overall Pod as failed"), each with the environment its
//! `env` gives it. The store steps run the real AWS CLI against a real S3 store (SeaweedFS); the services'
//! tools are fakes put first on the PATH (`fake_tools/`), whose flags, required values and exit codes
//! are those of the upstream tools (cited there), and the InfluxDB server is a fake following the
//! upstream handlers (`influx_fake`). Scripts run exactly as rendered; only the pod's paths (`/backup`,
//! `/tmp`, `/dev/termination-log`) point into a directory of the test, and InfluxDB's address (`base=`)
//! at the fake.

mod influx_fake;

use std::{collections::BTreeMap, path::PathBuf};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde_json::Value;

const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/agent/fake_tools");

/// The user and password of a request's Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.into(), password.into()))
}

/// A pod's world in a directory: `bin/` with the fake tools, the pod's `backup/` volume, its `tmp/`.
struct Pod {
    dir: PathBuf,
}

impl Pod {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("cp-backup-job-{}", uuid::Uuid::new_v4().simple()));
        for sub in ["bin", "backup", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let wrappers = [
            ("mongodump", format!("exec python3 {TOOLS}/mongo_tools.py mongodump \"$@\"")),
            ("mongorestore", format!("exec python3 {TOOLS}/mongo_tools.py mongorestore \"$@\"")),
            ("mongosh", format!("exec node {TOOLS}/mongosh.js \"$@\"")),
            ("influx", format!("exec python3 {TOOLS}/influx.py \"$@\"")),
        ];
        for (name, body) in wrappers {
            let path = dir.join("bin").join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::process::Command::new("chmod").arg("755").arg(&path).status().unwrap();
        }
        Pod { dir }
    }

    /// `script` with the pod's paths pointing into this directory.
    fn paths(&self, script: &str) -> String {
        let at = |p: &str| self.dir.join(p).display().to_string();
        // `/tmp/` first: the directory itself is under the system's /tmp.
        script
            .replace("/tmp/", &format!("{}/", at("tmp")))
            .replace("/backup", &at("backup"))
            .replace("/dev/termination-log", &at("termination-log"))
    }

    /// Runs the containers of `pod` (a pod template's spec) as the kubelet does: init containers in order,
    /// then the first container, each only when the one before succeeded. `secrets` gives the value of
    /// each `secretKeyRef` (`<secret>/<key>`); `base` replaces InfluxDB's address. The containers that
    /// ran: name, success, stderr.
    async fn run(
        &self,
        pod: &Value,
        secrets: &BTreeMap<String, String>,
        base: Option<std::net::SocketAddr>,
        extra_env: &[(&str, String)],
    ) -> Vec<(String, bool, String)> {
        let containers: Vec<&Value> = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["containers"].as_array().into_iter().flatten())
            .collect();
        let mut ran = Vec::new();
        for container in containers {
            let mut script = container["command"][2].as_str().expect("a /bin/sh -c script").to_owned();
            if let (Some(address), Some(start)) = (base, script.find("base='http://")) {
                let end = start + script[start..].find("'\n").expect("its end");
                script = format!("{}base='http://{address}'{}", &script[..start], &script[end + 1..]);
            }
            let script = self.paths(&script);
            let env: Vec<(String, String)> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let name = e["name"].as_str().unwrap().to_owned();
                    let value = match e["value"].as_str() {
                        Some(v) => v.to_owned(),
                        None => {
                            let r = &e["valueFrom"]["secretKeyRef"];
                            let key =
                                format!("{}/{}", r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                            secrets.get(&key).unwrap_or_else(|| panic!("no value for {key} ({name})")).clone()
                        }
                    };
                    (name, value)
                })
                .collect();
            let path = format!(
                "{}:{}:{}",
                self.dir.join("bin").display(),
                crate::job_scripts::aws_cli_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let output = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env_clear()
                .env("PATH", path)
                .env("HOME", self.dir.join("tmp"))
                .envs(env)
                .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .await
                .expect("sh runs");
            let ok = output.status.success();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            ran.push((container["name"].as_str().unwrap().to_owned(), ok, stderr));
            if !ok {
                break;
            }
        }
        ran
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The store (a real S3 server) and the environment the Jobs' store Secret gives.
struct Store {
    s3: testkit::S3Server,
}

impl Store {
    fn start() -> Self {
        Store { s3: testkit::S3Server::start() }
    }

    /// The instance's store Secret, as `secretKeyRef`s read it.
    fn secret(&self, mi: &cluster_agent::crd::ManagedInstance) -> BTreeMap<String, String> {
        let name = cluster_agent::render::backup::store_secret_name(mi);
        [
            ("endpoint", self.s3.endpoint()),
            ("bucket", testkit::s3::BACKUP_BUCKET.to_owned()),
            ("access-key-id", self.s3.access_key().to_owned()),
            ("secret-access-key", self.s3.secret_key().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{name}/{k}"), v))
        .collect()
    }

    fn client(&self) -> backup_store::BackupStore {
        backup_store::BackupStore::new(&backup_store::StoreConfig {
            endpoint: self.s3.endpoint(),
            bucket: testkit::s3::BACKUP_BUCKET.to_owned(),
            region: "us-east-1".into(),
            access_key_id: self.s3.access_key().to_owned(),
            secret_access_key: self.s3.secret_key().to_owned(),
        })
        .unwrap()
    }
}

/// Asserts every container ran and succeeded.
fn all_succeeded(ran: &[(String, bool, String)], names: &[&str]) {
    let got: Vec<&str> = ran.iter().map(|(n, _, _)| n.as_str()).collect();
    for (name, ok, stderr) in ran {
        assert!(ok, "container {name} failed:\n{stderr}");
    }
    assert_eq!(got, names, "the containers that ran");
}

/// Asserts the backup's upload, as the Job reported it in its termination message (written in `dir`),
/// is what the store holds at `key`, and the one object under the instance's prefix.
async fn assert_uploaded_alone(store: &Store, dir: &std::path::Path, instance_id: &str, key: &str) {
    let said: cluster_agent::render::backup::Uploaded =
        serde_json::from_str(&std::fs::read_to_string(dir.join("termination-log")).unwrap()).unwrap();
    let client = store.client();
    assert_eq!(
        client.verify(key, said.size, &said.sha256).await.unwrap(),
        backup_store::Verification::Matches,
        "the store holds what the termination message reports"
    );
    let listed: Vec<String> =
        client.list(&format!("acme/{instance_id}/")).await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, vec![key.to_owned()], "one object, under the instance's prefix");
}

mod influxdb;
mod mongodb;

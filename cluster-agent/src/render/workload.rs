//! What runs inside the pods of the StatefulSet services (MongoDB, InfluxDB, Grafana), as their images
//! behave: where each reads its configuration and in which format, which directories its entrypoint
//! writes, which user it runs as, and when it is ready. Every fact carries the upstream file it comes
//! from; a test per fact (`tests/workloads.rs`) holds the rendered objects to it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{admin_user, credentials_name, scalar, service_port};
use crate::crd::ManagedInstance;

/// How one service's StatefulSet runs its image.
pub(super) struct Workload {
    pub image: String,
    pub port: u16,
    /// the file the ConfigMap holds, mounted at `config_path`
    pub config_file: &'static str,
    pub config_text: String,
    /// the environment the image's entrypoint initialises the database from (and finds its config by)
    pub env: Value,
    /// arguments to the image's entrypoint, when its default command does not read our config file
    pub args: Option<Value>,
    pub data_path: &'static str,
    /// where the ConfigMap is mounted: never a directory the image's entrypoint writes
    pub config_path: &'static str,
    /// further volumes of the pod, each with where the container mounts it
    pub volumes: Vec<(Value, Value)>,
    /// the pod's securityContext, when the image needs one to write its volume
    pub pod_security: Option<Value>,
    /// when Kubernetes may send clients to a replica
    pub readiness: Value,
}

/// An environment variable holding the generated password (the credentials Secret's `password` key).
fn password_env(name: &str, mi: &ManagedInstance) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": credentials_name(mi), "key": "password"}}})
}

/// A configuration value as it is written into a YAML file: strings quoted (a JSON string is a YAML
/// flow scalar), numbers and booleans bare.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(_) => value.to_string(),
        other => scalar(other),
    }
}

pub(super) fn workload(mi: &ManagedInstance) -> Workload {
    let user = admin_user(&mi.spec.service).unwrap_or("admin");
    match mi.spec.service.as_str() {
        "mongodb" => Workload {
            image: format!("mongo:{}", mi.spec.version),
            port: service_port("mongodb"),
            config_file: "mongod.conf",
            config_text: mongod_conf(&mi.spec.config),
            // The image creates the root user only when both are set, and refuses to start with one
            // alone (docker-library/mongo 7.0/docker-entrypoint.sh: "both must be specified for a user to
            // be created").
            env: json!([{"name": "MONGO_INITDB_ROOT_USERNAME", "value": user}, password_env("MONGO_INITDB_ROOT_PASSWORD", mi)]),
            // The image's command is plain `mongod`, which reads no file; arguments starting with `-` are
            // given to mongod by the entrypoint, which also reads `--config` itself (docker-library/mongo
            // 7.0/docker-entrypoint.sh: `if [ "${1:0:1}" = '-' ]; then set -- mongod "$@"`, `_parse_config`).
            args: Some(json!(["--config", format!("{MONGO_CONFIG_DIR}/mongod.conf")])),
            data_path: "/data/db",
            config_path: MONGO_CONFIG_DIR,
            volumes: Vec::new(),
            pod_security: None,
            // The entrypoint first runs a temporary mongod that creates the root user, bound to 127.0.0.1
            // only (docker-library/mongo 7.0/docker-entrypoint.sh: `_mongod_hack_ensure_arg_val --bind_ip
            // 127.0.0.1`); the final one binds every address (`--bind_ip_all`). A TCP probe to the pod's
            // address therefore succeeds only once the real server listens.
            readiness: json!({"tcpSocket": {"port": service_port("mongodb")}, "periodSeconds": 5}),
        },
        "influxdb" => Workload {
            image: format!("influxdb:{}", mi.spec.version),
            port: service_port("influxdb"),
            config_file: "config.yml",
            config_text: influxd_config(&mi.spec.config),
            // The image sets InfluxDB up only in `setup` mode with a user, password, org and bucket
            // (influxdata/influxdata-docker influxdb/2.7/entrypoint.sh, REQUIRED_INIT_VARS); without it
            // the server starts un-set-up and the first caller may claim it. `INFLUXD_CONFIG_PATH` names
            // the config file for both the entrypoint (`set_config_path`) and influxd (influxdata/influxdb
            // v2.7.12 cmd/influxd/launcher/cmd.go: "A config file can be provided via the
            // INFLUXD_CONFIG_PATH env var").
            env: json!([
                {"name": "INFLUXD_CONFIG_PATH", "value": format!("{INFLUX_CONFIG_DIR}/config.yml")},
                {"name": "DOCKER_INFLUXDB_INIT_MODE", "value": "setup"},
                {"name": "DOCKER_INFLUXDB_INIT_USERNAME", "value": user},
                password_env("DOCKER_INFLUXDB_INIT_PASSWORD", mi),
                {"name": "DOCKER_INFLUXDB_INIT_ORG", "value": mi.spec.project},
                {"name": "DOCKER_INFLUXDB_INIT_BUCKET", "value": "default"},
            ]),
            args: None,
            data_path: INFLUX_DATA_DIR,
            // Not /etc/influxdb2: the entrypoint (`set -eo pipefail`) `chown`s that directory unguarded in
            // `create_directories` (`find "${CONFIG_VOLUME}" \! -user influxdb -exec chown influxdb '{}'
            // +`, CONFIG_VOLUME=/etc/influxdb2), which fails on a read-only ConfigMap volume and stops the
            // container (influxdata-docker issues #468, #611).
            config_path: INFLUX_CONFIG_DIR,
            // ... and `influx setup` writes the CLI's configs there (Dockerfile `ENV INFLUX_CONFIGS_PATH
            // /etc/influxdb2/influx-configs`), so it stays writable: an emptyDir (the image declares it a
            // VOLUME, which Kubernetes does not provide). Nothing of ours reads those configs after setup,
            // and they hold the operator token, so they are not kept on the data volume.
            volumes: vec![(
                json!({"name": "influxdb-etc", "emptyDir": {}}),
                json!({"name": "influxdb-etc", "mountPath": "/etc/influxdb2"}),
            )],
            pod_security: None,
            // The entrypoint's setup runs a temporary influxd on INFLUXD_INIT_PORT 9999 (influxdb/2.7
            // Dockerfile, entrypoint.sh `init_influxd`); `/health` answers 200 on 8086 only from the final
            // server (influxdata/influxdb v2.7.12 http/health.go, http/handler.go `HealthPath`).
            readiness: json!({"httpGet": {"path": "/health", "port": service_port("influxdb")}, "periodSeconds": 5}),
        },
        _ => Workload {
            image: format!("grafana/grafana:{}", mi.spec.version),
            port: service_port("grafana"),
            config_file: "grafana.ini",
            config_text: grafana_ini(&mi.spec.config),
            // `run.sh` starts `grafana server --config="$GF_PATHS_CONFIG"` (grafana/grafana
            // packaging/docker/run.sh); pointing it at our file leaves /etc/grafana (and its
            // provisioning directory, GF_PATHS_PROVISIONING) as the image has it.
            env: json!([
                {"name": "GF_PATHS_CONFIG", "value": format!("{GRAFANA_CONFIG_DIR}/grafana.ini")},
                {"name": "GF_SECURITY_ADMIN_USER", "value": user},
                password_env("GF_SECURITY_ADMIN_PASSWORD", mi),
            ]),
            args: None,
            data_path: "/var/lib/grafana",
            config_path: GRAFANA_CONFIG_DIR,
            volumes: Vec::new(),
            // Grafana runs as uid 472 and `run.sh` (`set -e`) does `mkdir "$GF_PATHS_PLUGINS"` under the
            // data directory, which fails on a root-owned volume; Grafana's own Kubernetes manifest gives
            // the pod `fsGroup: 472` and `supplementalGroups: [0]` (grafana/grafana
            // docs/sources/setup-grafana/installation/kubernetes/index.md).
            pod_security: Some(json!({"fsGroup": GRAFANA_FS_GROUP, "supplementalGroups": [0]})),
            // The same manifest's readiness probe.
            readiness: json!({"httpGet": {"path": "/robots.txt", "port": service_port("grafana")}, "periodSeconds": 10}),
        },
    }
}

/// The group Grafana's pod gets its volumes owned by: its uid, as in Grafana's own Kubernetes manifest
/// (grafana/grafana docs/sources/setup-grafana/installation/kubernetes/index.md, `fsGroup: 472`).
pub const GRAFANA_FS_GROUP: u32 = 472;
/// Where MongoDB's ConfigMap is mounted (no directory of the image).
const MONGO_CONFIG_DIR: &str = "/etc/mongo";
/// Where InfluxDB's ConfigMap is mounted (no directory of the image).
const INFLUX_CONFIG_DIR: &str = "/etc/cp-influxdb";
/// Where Grafana's ConfigMap is mounted (no directory of the image).
const GRAFANA_CONFIG_DIR: &str = "/etc/cp-grafana";
/// InfluxDB's data directory: the image's VOLUME, which its default config points at.
const INFLUX_DATA_DIR: &str = "/var/lib/influxdb2";

/// The mongod option a catalog parameter sets, as `(section, option)` of the YAML config file, and its
/// value as mongod spells it (MongoDB manual, *Configuration File Options*: `net.maxIncomingConnections`,
/// `operationProfiling.slowOpThresholdMs`, `operationProfiling.mode` ∈ `off`, `slowOp`, `all`). A
/// parameter not mapped here is written under its own name at the top level.
fn mongod_option(name: &str, value: &Value) -> (Option<&'static str>, String, Value) {
    match name {
        "max_incoming_connections" => (Some("net"), "maxIncomingConnections".into(), value.clone()),
        "slow_op_threshold_ms" => (Some("operationProfiling"), "slowOpThresholdMs".into(), value.clone()),
        "profiling_level" => {
            let mode = match value.as_str() {
                Some("slow_op") => json!("slowOp"),
                _ => value.clone(),
            };
            (Some("operationProfiling"), "mode".into(), mode)
        }
        _ => (None, name.to_owned(), value.clone()),
    }
}

/// mongod's YAML configuration file. It always names the data directory the volume is mounted at
/// (`storage.dbPath`, the entrypoint reads it too), so it is never empty.
pub fn mongod_conf(config: &BTreeMap<String, Value>) -> String {
    let mut sections: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    let mut top = Vec::new();
    sections.entry("storage").or_default().insert("dbPath".into(), json!("/data/db"));
    for (name, value) in config {
        match mongod_option(name, value) {
            (Some(section), option, value) => {
                sections.entry(section).or_default().insert(option, value);
            }
            (None, option, value) => top.push(format!("{option}: {}", yaml_scalar(&value))),
        }
    }
    let mut text = String::new();
    for (section, options) in sections {
        text.push_str(&format!("{section}:\n"));
        for (option, value) in options {
            text.push_str(&format!("  {option}: {}\n", yaml_scalar(&value)));
        }
    }
    for line in top {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// influxd's YAML configuration: the image's default file's paths, which put the data on the volume
/// (influxdata-docker influxdb/2.7/default-config.yml; influxd's own defaults are under
/// `~/.influxdbv2`, influxdb v2.7.12 cmd/influxd/launcher/cmd.go `fs.InfluxDir()`), then each parameter
/// as its influxd option (the catalog's `log_level` is `log-level`: options are kebab-case).
pub fn influxd_config(config: &BTreeMap<String, Value>) -> String {
    let mut text =
        format!("bolt-path: {INFLUX_DATA_DIR}/influxd.bolt\nengine-path: {INFLUX_DATA_DIR}/engine\n");
    for (name, value) in config {
        text.push_str(&format!("{}: {}\n", name.replace('_', "-"), yaml_scalar(value)));
    }
    text
}

/// The `[section]` and key of Grafana's ini a catalog parameter sets (grafana/grafana conf/defaults.ini:
/// `[log] level`, `[users] allow_sign_up`, `[auth.anonymous] enabled`). Grafana reads every setting from
/// its section (`cfg.Raw.Section(...)`); go-ini puts a key before any section header into `DEFAULT`,
/// where Grafana never looks. A parameter not mapped here is written under its own name there.
fn grafana_key(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "log_level" => Some(("log", "level")),
        "allow_sign_up" => Some(("users", "allow_sign_up")),
        "anonymous_enabled" => Some(("auth.anonymous", "enabled")),
        _ => None,
    }
}

/// Grafana's ini file, each key under its section.
pub fn grafana_ini(config: &BTreeMap<String, Value>) -> String {
    let mut unmapped = String::new();
    let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in config {
        match grafana_key(name) {
            Some((section, key)) => {
                sections.entry(section).or_default().push(format!("{key} = {}", scalar(value)))
            }
            None => unmapped.push_str(&format!("{name} = {}\n", scalar(value))),
        }
    }
    let mut text = unmapped;
    for (section, lines) in sections {
        text.push_str(&format!("[{section}]\n"));
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

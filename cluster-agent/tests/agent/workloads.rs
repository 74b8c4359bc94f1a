//! The rendered workloads held to how the software inside their pods behaves. No backend here runs a
//! container, so each test states the upstream fact it encodes (repository, tag, path) and checks the
//! rendered objects against it.

use crate::fixture;

use cluster_agent::render::{self, Child, ChildKind};
use serde_json::{Value, json};

fn rendered(service: &str, version: &str, config: Value) -> Vec<Child> {
    render::render(&fixture::instance(service, version, config), None)
}

fn statefulset(children: &[Child]) -> &Value {
    &children.iter().find(|c| c.kind == ChildKind::StatefulSet).expect("a StatefulSet").object
}

fn config_map(children: &[Child]) -> &Value {
    &children.iter().find(|c| c.kind == ChildKind::ConfigMap).expect("a ConfigMap").object
}

fn container(set: &Value) -> &Value {
    &set["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// The volume of the pod that the container mounts at `path`.
fn volume_at<'a>(set: &'a Value, path: &str) -> Option<&'a Value> {
    let mount = container(set)["volumeMounts"].as_array()?.iter().find(|m| m["mountPath"] == path)?;
    set["spec"]["template"]["spec"]["volumes"].as_array()?.iter().find(|v| v["name"] == mount["name"])
}

/// The directory the ConfigMap is mounted at, and the file name it holds.
fn config_file(children: &[Child]) -> (String, String) {
    let set = statefulset(children);
    let mount = container(set)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            set["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == m["name"] && v.get("configMap").is_some())
        })
        .expect("the ConfigMap is mounted");
    let data = config_map(children)["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "one file: {data:?}");
    (mount["mountPath"].as_str().unwrap().to_owned(), data.keys().next().unwrap().clone())
}

/// influxdata/influxdata-docker influxdb/2.7/entrypoint.sh runs under `set -eo pipefail` and, in
/// `create_directories`, `chown`s everything under CONFIG_VOLUME=/etc/influxdb2 that influxdb does not
/// own, unguarded: a read-only ConfigMap volume there stops the container (issues #468, #611). `influx
/// setup` writes the CLI configs there (Dockerfile `INFLUX_CONFIGS_PATH=/etc/influxdb2/influx-configs`).
/// The config file is found through `INFLUXD_CONFIG_PATH` (entrypoint `set_config_path`; influxdb
/// v2.7.12 cmd/influxd/launcher/cmd.go), and unless it says otherwise influxd keeps its data under
/// `~/.influxdbv2` (cmd.go `fs.InfluxDir()`), off the volume: the image's default file sets `bolt-path`
/// and `engine-path` under /var/lib/influxdb2 (influxdb/2.7/default-config.yml).
#[test]
fn influxdb_reads_its_config_from_outside_the_directory_its_entrypoint_chowns() {
    let children = rendered("influxdb", "2.7", json!({"log_level": "warn"}));
    let set = statefulset(&children);
    let etc = volume_at(set, "/etc/influxdb2").expect("/etc/influxdb2 is a volume the entrypoint can write");
    assert!(etc.get("configMap").is_none() && etc.get("secret").is_none(), "read-only: {etc}");
    assert!(etc.get("emptyDir").is_some() || etc.get("persistentVolumeClaim").is_some(), "{etc}");
    let (dir, file) = config_file(&children);
    assert!(!dir.starts_with("/etc/influxdb2"), "the ConfigMap is mounted at {dir}");
    let path = env(container(set), "INFLUXD_CONFIG_PATH").expect("INFLUXD_CONFIG_PATH");
    assert_eq!(path["value"], format!("{dir}/{file}"), "influxd reads the file the ConfigMap holds");
    let text = config_map(&children)["data"][&file].as_str().unwrap();
    let mounts = container(set)["volumeMounts"].as_array().unwrap();
    let data = mounts.iter().find(|m| m["mountPath"] == "/var/lib/influxdb2").expect("the data volume");
    assert_eq!(data["name"], "data", "the claim template's volume");
    assert!(text.contains("bolt-path: /var/lib/influxdb2/influxd.bolt\n"), "{text}");
    assert!(text.contains("engine-path: /var/lib/influxdb2/engine\n"), "{text}");
    assert!(text.contains("log-level: \"warn\"\n"), "influxd's options are kebab-case: {text}");
}

/// docker-library/mongo 7.0/docker-entrypoint.sh: the image's command is `mongod`, which reads no file
/// unless given `--config`; the entrypoint passes arguments starting with `-` to mongod and reads the
/// `--config` file itself. The option names are mongod's (MongoDB manual, *Configuration File Options*):
/// `net.maxIncomingConnections`, `operationProfiling.slowOpThresholdMs`, `operationProfiling.mode` one of
/// `off`, `slowOp`, `all`.
#[test]
fn mongod_is_given_its_config_file_with_mongod_s_option_names() {
    let children = rendered(
        "mongodb",
        "7.0",
        json!({"max_incoming_connections": 500, "slow_op_threshold_ms": 250, "profiling_level": "slow_op"}),
    );
    let (dir, file) = config_file(&children);
    let args = container(statefulset(&children))["args"].as_array().cloned().unwrap_or_default();
    let given = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1].clone());
    assert_eq!(given, Some(json!(format!("{dir}/{file}"))), "mongod reads the ConfigMap's file: {args:?}");
    let text = config_map(&children)["data"][&file].as_str().unwrap();
    assert_eq!(
        text,
        "net:\n  maxIncomingConnections: 500\n\
         operationProfiling:\n  mode: \"slowOp\"\n  slowOpThresholdMs: 250\n\
         storage:\n  dbPath: \"/data/db\"\n"
    );
    for mode in ["off", "all"] {
        let children = rendered("mongodb", "7.0", json!({"profiling_level": mode}));
        let text = config_map(&children)["data"]["mongod.conf"].as_str().unwrap().to_owned();
        assert!(text.contains(&format!("  mode: \"{mode}\"\n")), "{text}");
    }
}

/// Every parameter of the built-in catalog is written where its service reads it: a MongoDB parameter
/// under a section of mongod's options, a Grafana one under an ini `[section]` (go-ini puts keys before
/// any section into DEFAULT, which Grafana never reads: grafana/grafana pkg/setting/setting.go reads
/// each key from its section; conf/defaults.ini `[log] level`, `[users] allow_sign_up`,
/// `[auth.anonymous] enabled`).
#[test]
fn every_catalog_parameter_lands_in_a_section_its_service_reads() {
    use domain::{Catalog, ServiceType, catalog::ConfigKind};
    for service in [ServiceType::Mongodb, ServiceType::Grafana] {
        for key in &Catalog::builtin().offering(service).unwrap().config_keys {
            let value = match &key.kind {
                ConfigKind::Integer { max, .. } => json!(max),
                ConfigKind::Boolean => json!(true),
                ConfigKind::OneOf { values } => json!(values[0]),
            };
            let version = if service == ServiceType::Mongodb { "7.0" } else { "11.6" };
            let children = rendered(service.as_str(), version, json!({ key.name.clone(): value }));
            let (_, file) = config_file(&children);
            let text = config_map(&children)["data"][&file].as_str().unwrap();
            let first = text.lines().next().unwrap_or_default();
            match service {
                ServiceType::Grafana => {
                    assert!(first.starts_with('[') && first.ends_with(']'), "{}: {text}", key.name)
                }
                _ => assert!(
                    text.lines().all(|l| l.starts_with(' ') || l.ends_with(':')),
                    "{}: every option under a section: {text}",
                    key.name
                ),
            }
        }
    }
    let children = rendered(
        "grafana",
        "11.6",
        json!({"allow_sign_up": true, "anonymous_enabled": false, "log_level": "warn"}),
    );
    assert_eq!(
        config_map(&children)["data"]["grafana.ini"],
        "[auth.anonymous]\nenabled = false\n[log]\nlevel = warn\n[users]\nallow_sign_up = true\n"
    );
    // ... and Grafana reads that file (`grafana server --config="$GF_PATHS_CONFIG"`, grafana/grafana
    // packaging/docker/run.sh).
    let (dir, file) = config_file(&children);
    let path = env(container(statefulset(&children)), "GF_PATHS_CONFIG").expect("GF_PATHS_CONFIG");
    assert_eq!(path["value"], format!("{dir}/{file}"));
}

/// Grafana runs as uid 472; grafana/grafana packaging/docker/run.sh (`set -e`) creates its plugins
/// directory on the data volume and stops when it cannot; Grafana's own Kubernetes manifest gives the pod
/// `fsGroup: 472` (docs/sources/setup-grafana/installation/kubernetes/index.md).
#[test]
fn grafana_s_pod_owns_its_volume_through_fs_group_472() {
    let children = rendered("grafana", "11.6", json!({}));
    let pod = &statefulset(&children)["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["fsGroup"], 472, "{pod:#}");
}

/// Each image's entrypoint first runs a temporary server (docker-library/mongo 7.0/docker-entrypoint.sh
/// binds it to 127.0.0.1; influxdata-docker influxdb/2.7 runs it on INFLUXD_INIT_PORT 9999), so a replica
/// is ready only once the real server answers on the pod's address: MongoDB's port, InfluxDB's `/health`
/// (influxdb v2.7.12 http/health.go), Grafana's probe from its own Kubernetes manifest.
#[test]
fn every_workload_is_ready_only_when_its_real_server_answers() {
    for (service, version, port, path) in [
        ("mongodb", "7.0", 27017, None),
        ("influxdb", "2.7", 8086, Some("/health")),
        ("grafana", "11.6", 3000, Some("/robots.txt")),
    ] {
        let children = rendered(service, version, json!({}));
        let probe = &container(statefulset(&children))["readinessProbe"];
        match path {
            None => assert_eq!(probe["tcpSocket"]["port"], port, "{service}: {probe}"),
            Some(path) => {
                assert_eq!(probe["httpGet"]["port"], port, "{service}: {probe}");
                assert_eq!(probe["httpGet"]["path"], path, "{service}: {probe}");
            }
        }
    }
}

/// Every Job the agent runs for an instance of `service`: a rotation, a backup, a restore.
fn jobs(service: &str, version: &str) -> Vec<(String, Value)> {
    let mut mi = fixture::instance(service, version, json!({}));
    let backup = uuid::Uuid::parse_str("0193a0b0-0000-7000-8000-0000000000b1").unwrap();
    let key = format!("acme/{}/{backup}", mi.spec.instance_id);
    let mut jobs = Vec::new();
    jobs.extend(render::rotation::job(&mi, 5).map(|j| ("rotation".to_owned(), j.object)));
    jobs.extend(render::backup::job(&mi, backup, &key).map(|j| ("backup".to_owned(), j.object)));
    mi.spec.restore = Some(cluster_agent::crd::RestoreTarget {
        backup_id: backup.to_string(),
        location: key.clone(),
        target_time: None,
    });
    jobs.extend(render::backup::restore_job(&mi, 6, &key).map(|j| ("restore".to_owned(), j.object)));
    // PostgreSQL's configuration check (`render/pg_settings.rs`), made with the instance.
    if service == "postgresql" {
        mi.spec.config = [("work_mem_kib".to_owned(), json!(4096))].into();
        mi.spec.restore = None;
        let check = render::render(&mi, None).into_iter().find(render::pg_settings::is_verification_job);
        jobs.push((
            "configuration check".to_owned(),
            check.expect("PostgreSQL's configuration check").object,
        ));
    }
    jobs
}

/// Whether a NetworkPolicy admits a pod of the policy's namespace with `labels` to `port`
/// (networking.k8s.io/v1 `NetworkPolicyIngressRule`: some rule whose `from` has a peer selecting the pod
/// — a `podSelector` alone selects pods of the policy's namespace — and whose `ports`, if any, include the
/// port).
fn admits(policy: &Value, labels: &Value, port: u16) -> bool {
    let selects = |selector: &Value| {
        selector["matchLabels"].as_object().is_some_and(|wanted| wanted.iter().all(|(k, v)| &labels[k] == v))
    };
    policy["spec"]["ingress"].as_array().unwrap().iter().any(|rule| {
        let peer = rule["from"].as_array().is_none_or(|from| {
            from.iter()
                .any(|p| p.get("namespaceSelector").is_none() && p.get("podSelector").is_some_and(selects))
        });
        let ports = rule["ports"].as_array().is_none_or(|ports| ports.iter().any(|p| p["port"] == port));
        peer && ports
    })
}

/// With a policy-enforcing network plugin the instance's NetworkPolicy decides who reaches its pods: the
/// agent's own Jobs that connect to the instance (rotation, backup, restore) must be admitted to the
/// service port, or every rotation, MongoDB/InfluxDB backup and restore times out; the ACL's blocks reach
/// the service port only; another pod of the namespace reaches nothing.
#[test]
fn the_network_policy_admits_the_agent_s_jobs_and_the_acl_to_the_service_port_only() {
    for (service, version, port) in [
        ("mongodb", "7.0", 27017),
        ("influxdb", "2.7", 8086),
        ("grafana", "11.6", 3000),
        ("postgresql", "16", 5432),
    ] {
        let children = rendered(service, version, json!({}));
        let policy = &children.iter().find(|c| c.kind == ChildKind::NetworkPolicy).unwrap().object;
        for (what, job) in jobs(service, version) {
            let labels = &job["spec"]["template"]["metadata"]["labels"];
            assert!(admits(policy, labels, port), "{service}: the {what} Job's pod {labels} is refused");
            assert!(!admits(policy, labels, port + 1), "{service}: the {what} Job's pod reaches other ports");
        }
        assert!(!admits(policy, &json!({"app": "someone-else"}), port), "{service}: another pod is admitted");
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            if rule["from"].as_array().unwrap().iter().any(|p| p.get("ipBlock").is_some()) {
                assert_eq!(rule["ports"], json!([{"protocol": "TCP", "port": port}]), "{service}: {rule}");
            }
        }
    }
}

/// A Pending pod (no node fits, an image that is never pulled) keeps a Job without a deadline running for
/// ever, and with it the operation waiting on it (batch/v1 `JobSpec.activeDeadlineSeconds`: the Job is
/// ended `Failed`, reason `DeadlineExceeded`, once it has been active that long).
#[test]
fn every_job_has_a_deadline() {
    for (service, version) in
        [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6"), ("postgresql", "16")]
    {
        for (what, job) in jobs(service, version) {
            let deadline = job["spec"]["activeDeadlineSeconds"].as_u64();
            assert!(deadline.is_some_and(|d| d > 0), "{service} {what}: {deadline:?}");
        }
    }
}

/// The names of the environment variables of `job`'s containers that come from a Secret.
fn secret_vars(job: &Value) -> Vec<String> {
    let pod = &job["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod[list].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["valueFrom"].get("secretKeyRef").is_some())
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

/// Every process's command line is readable by anyone on the node (`/proc/<pid>/cmdline`, `ps`), so a
/// secret may reach a command only through its environment or a file. In a Job's shell scripts, a line
/// that expands a secret (a variable from a Secret, or `token`/`source`, the InfluxDB tokens the scripts
/// read) must be a shell builtin: `printf` into a file, `export`, or an assignment.
#[test]
fn no_secret_is_on_a_job_s_command_line() {
    for (service, version) in
        [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6"), ("postgresql", "16")]
    {
        for (what, job) in jobs(service, version) {
            let mut secrets = secret_vars(&job);
            // The AWS CLI reads its keys from its environment; the store's endpoint and bucket come from
            // the same Secret but are no secrets.
            secrets.retain(|v| !v.starts_with("AWS_") && v != "ENDPOINT" && v != "BUCKET");
            secrets.extend(["token".to_owned(), "source".to_owned()]);
            let pod = &job["spec"]["template"]["spec"];
            for container in ["initContainers", "containers"]
                .iter()
                .flat_map(|list| pod[list].as_array().cloned().unwrap_or_default())
            {
                let script = container["command"][2].as_str().unwrap_or_default();
                for line in script.lines().map(str::trim) {
                    // `[` is a shell builtin (dash, the images' `sh`): a test of a value passes it to no
                    // process; what follows the test is checked as a command of its own.
                    let line = match line.strip_prefix("[ ") {
                        Some(test) => test.split_once(" ]").map_or("", |(_, after)| after).trim(),
                        None => line,
                    };
                    let expands = secrets
                        .iter()
                        .any(|v| line.contains(&format!("${v}")) || line.contains(&format!("${{{v}}}")));
                    let builtin = line.trim_start_matches("if ").starts_with("printf ")
                        || line.starts_with("export ")
                        || (line.split_once('=').is_some_and(|(name, value)| {
                            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                                && !value.contains(' ')
                        }));
                    assert!(!expands || builtin, "{service} {what}: a secret on a command line: {line}");
                }
            }
        }
    }
}

/// InfluxDB v2.7 admits `PUT /api/v2/users/{id}/password` only with a token or a session: only `GET
/// /api/v2`, `POST /api/v2/signin|signout`, `GET|POST /api/v2/setup` and the swagger document are
/// unauthenticated (influxdata/influxdb v2.7.12 http/platform_handler.go), and a Basic header is neither
/// a token nor a session (http/authentication_middleware.go `ProbeAuthScheme`, http/tokens.go). The
/// handler then compares the Basic credentials' password (tenant/http_server_user.go
/// `handlePutUserPassword`). So the request carries the session `POST /api/v2/signin` set, and the Basic
/// credentials.
#[test]
fn influxdb_s_password_change_carries_a_session_signed_in_with_the_old_password() {
    let (_, job) = jobs("influxdb", "2.7").into_iter().find(|(what, _)| what == "rotation").unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap().to_owned();
    let lines: Vec<&str> = script.lines().collect();
    let change =
        lines.iter().position(|l| l.contains("-X PUT") && l.contains("/password")).expect("the change");
    let cookie =
        lines[change].split_whitespace().skip_while(|w| *w != "-b").nth(1).expect("a session cookie");
    let signin = lines[..change]
        .iter()
        .find(|l| l.contains("/api/v2/signin") && l.contains(&format!("-c {cookie}")))
        .unwrap_or_else(|| panic!("no sign-in writes {cookie}: {script}"));
    // Both sign-in and change use the credentials file written from the current password.
    let old = lines
        .iter()
        .find(|l| l.starts_with("printf 'user") && l.contains("$OLD_PASSWORD"))
        .and_then(|l| l.split("> ").nth(1))
        .expect("the old password's credentials");
    assert!(signin.contains(&format!("-K {old}")), "{signin}");
    assert!(lines[change].contains(&format!("-K {old}")), "{}", lines[change]);
}

/// Grafana's backup copies replica 0's database from its ReadWriteOnce claim, which is attached to the
/// node of replica 0's pod only (core/v1 PersistentVolumeAccessMode): the Job's pod must be placed beside
/// that pod, found by the name label the StatefulSet controller gives each pod (k8s.io/api v0.36.1
/// apps/v1/types.go `StatefulSetPodNameLabel`), not beside any replica.
#[test]
fn grafana_s_backup_runs_beside_the_replica_whose_claim_it_mounts() {
    let (_, job) = jobs("grafana", "11.6").into_iter().find(|(what, _)| what == "backup").unwrap();
    let pod = &job["spec"]["template"]["spec"];
    let claim = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
    assert_eq!(claim, Some("data-orders-0"));
    let terms = &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        terms[0]["labelSelector"]["matchLabels"],
        json!({"statefulset.kubernetes.io/pod-name": "orders-0"})
    );
    assert_eq!(terms[0]["topologyKey"], "kubernetes.io/hostname");
}

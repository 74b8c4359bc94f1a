//! A backup as Kubernetes objects: the store's credentials as a Secret in the instance's namespace, and a
//! Job that runs the service's own dump tool and uploads the artifact.
//!
//! The Job's dump runs in an init container of the service's own image (so the tool matches the server),
//! writing to a shared `emptyDir`; the main container uploads it with the AWS CLI and writes what it
//! uploaded — size and SHA-256 — to its termination message, where the agent reads it (the kubelet copies
//! `/dev/termination-log` into the container's terminated state: core/v1 `Container.terminationMessagePath`).

use kube::ResourceExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Child, ChildKind, admin_user, credentials_name, service_port};
use crate::crd::ManagedInstance;

/// The image that moves artifacts to and from the store.
const AWS_CLI_IMAGE: &str = "amazon/aws-cli:2.22.35";
/// Annotation on an instance's store Secret: the restore source its keys were granted for
/// (`<project>/<instance-id>`, empty without one; `crate::store_access`).
pub const GRANT_ANNOTATION: &str = "cp.example.com/store-grant";
/// Label on a backup's Job naming the backup.
pub const BACKUP_LABEL: &str = "cp.example.com/backup-id";
/// Label on a backup's Job naming the instance it backs up.
pub const BACKUP_OF_LABEL: &str = "cp.example.com/backup-of";
/// Annotation recording that the Job's outcome was reported to the control plane.
pub const REPORTED_ANNOTATION: &str = "cp.example.com/reported";

/// Where backups go. No keys: each instance gets keys of its own from the control plane
/// (`crate::store_access`), kept in its store Secret ([`store_secret`]).
#[derive(Debug, Clone, Deserialize)]
pub struct StoreTarget {
    /// S3 endpoint as the cluster's pods reach it
    pub endpoint: String,
    /// bucket
    pub bucket: String,
}

/// Keys of one instance's store identity. `Debug` does not print the secret.
#[derive(Clone)]
pub struct StoreKeys {
    /// access key id
    pub access_key_id: String,
    /// secret access key
    pub secret_access_key: String,
}

impl std::fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKeys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl StoreTarget {
    /// The same store as the backup-store client sees it, with an instance's keys.
    pub fn store_config(&self, keys: &StoreKeys) -> backup_store::StoreConfig {
        backup_store::StoreConfig {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
        }
    }
}

/// What the upload container reports in its termination message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// bytes uploaded
    pub size: u64,
    /// SHA-256 of them, hex
    pub sha256: String,
}

/// Name of `mi`'s store Secret.
pub fn store_secret_name(mi: &ManagedInstance) -> String {
    format!("{}-backup-store", mi.name_any())
}

/// `mi`'s store Secret: where the store is and the instance's own keys, granted for the restore source
/// `grant` (see [`GRANT_ANNOTATION`]). Labelled as the instance's, so it goes with the instance.
pub fn store_secret(mi: &ManagedInstance, target: &StoreTarget, keys: &StoreKeys, grant: &str) -> Child {
    let name = store_secret_name(mi);
    let mut object = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": super::metadata(mi, &name),
        "type": "Opaque",
        "stringData": {"endpoint": target.endpoint, "bucket": target.bucket,
                       "access-key-id": keys.access_key_id, "secret-access-key": keys.secret_access_key},
    });
    // Written when asked for, not at every generation.
    object["metadata"]["labels"].as_object_mut().map(|l| l.remove(super::GENERATION_LABEL));
    object["metadata"]["annotations"] = json!({GRANT_ANNOTATION: grant});
    Child { kind: ChildKind::Secret, name, object }
}

/// Name of a backup's Job.
pub fn job_name(backup_id: Uuid) -> String {
    format!("backup-{}", backup_id.simple())
}

/// How a service is dumped: the image and command of the Job's `dump` init container, which writes
/// `/backup/artifact`.
struct Dump {
    image: String,
    command: String,
    /// Grafana's: the data volume, read only, and the node it is attached to
    data_volume: bool,
}

/// An image with Python, whose `sqlite3` module copies a live SQLite database through SQLite's online
/// backup API (Python docs, `sqlite3.Connection.backup`).
const PYTHON_IMAGE: &str = "python:3.13-alpine";

/// The dump of each service; `None` where a backup Job is not how the service is backed up (PostgreSQL:
/// see `barman`).
fn dump(mi: &ManagedInstance, host: &str) -> Option<Dump> {
    let user = admin_user(&mi.spec.service)?;
    let port = service_port(&mi.spec.service);
    let image = |image: String, command: String| Some(Dump { image, command, data_volume: false });
    match mi.spec.service.as_str() {
        // mongodump's archive format, gzipped: one file, restorable with `mongorestore --archive --gzip`
        // (MongoDB Database Tools, mongodump). The password reaches mongodump in a YAML file
        // (`--config`, which takes `password`: Database Tools docs, mongodump options), never on its
        // command line. One point in time: `--oplog` also captures the oplog entries written while the
        // dump runs, which `mongorestore --oplogReplay` applies, "for taking a point-in-time snapshot on
        // a replica set" (mongodb/mongo-tools 100.13.0 mongodump/options.go; it needs a full dump, which
        // this is: mongodump/mongodump.go "--oplog mode only supported on full dumps"). Every MongoDB
        // instance is a replica set (`replset`), so it has an oplog; the dump reads everything from the
        // primary (`readPreference=primary`), one member, so the oplog and the collections are that
        // member's.
        "mongodb" => image(
            format!("mongo:{}", mi.spec.version),
            format!(
                "set -eu\n\
                 {MONGO_TOOLS_CONFIG}\n\
                 mongodump --uri '{uri}' --username {user} --config=/tmp/mongo-tools.yaml \
                 --oplog --archive=/backup/artifact --gzip\n",
                uri = super::replset::uri(mi, "", &["authSource=admin", "readPreference=primary"]),
            ),
        ),
        // `influx backup` needs an operator token: the one the image's setup made for the admin user
        // (influxdata-docker influxdb/2.7/entrypoint.sh, `influx setup`), read through a session signed in
        // with the admin's password (`POST /api/v2/signin`, `GET /api/v2/authorizations?user=`). The image
        // ships curl and the influx CLI (influxdb/2.7/Dockerfile). No token is kept beside the dump: the
        // restore keeps the instance's own users and tokens (below).
        "influxdb" => image(
            format!("influxdb:{}", mi.spec.version),
            format!(
                "set -eu\n\
                 base='http://{host}:{port}'\n\
                 {signin}\n\
                 {token}\n\
                 export INFLUX_TOKEN=\"$token\"\n\
                 influx backup /backup/dump --host \"$base\"\n\
                 tar -czf /backup/artifact -C /backup dump\n",
                signin = influx_signin(user),
                token = influx_session_token(user),
            ),
        ),
        // Grafana keeps everything in SQLite (`/var/lib/grafana/grafana.db`): a consistent copy of the live
        // database through SQLite's online backup API, from the data volume mounted read only.
        "grafana" => Some(Dump {
            image: PYTHON_IMAGE.to_owned(),
            command: "python3 -c \"import sqlite3; \
                      src = sqlite3.connect('file:/var/lib/grafana/grafana.db?mode=ro', uri=True); \
                      dst = sqlite3.connect('/backup/artifact'); src.backup(dst); dst.close()\""
                .to_owned(),
            data_volume: true,
        }),
        _ => None,
    }
}

/// InfluxDB 2: signs the admin in with the password in `$PASSWORD`, keeping the session in
/// `/tmp/session` (`POST /api/v2/signin` answers 204 to valid Basic credentials; influxdata/influxdb
/// v2.7.12 session/http_server.go). The credentials go through a curl config file, not curl's command
/// line.
fn influx_signin(user: &str) -> String {
    format!(
        "{} && curl -fsS -c /tmp/session -o /dev/null -X POST -K /tmp/admin.curl \"$base/api/v2/signin\"",
        super::rotation::curl_credentials("/tmp/admin.curl", user, "PASSWORD")
    )
}

/// The mongosh script that, signed in as the replica set's internal user (`__system` on `local`, with
/// the keyfile in `$KEYFILE`; SCRAM-SHA-1, which keyfile authentication has always used), makes root's
/// password the instance's (`$PASSWORD`) again, creating root when the restored users lack it, then
/// checks that a fresh connection to the set (`uri`) signs in with it. JavaScript in single quotes: it
/// holds none.
pub fn mongo_reset_root_password(user: &str, uri: &str) -> String {
    format!(
        "const local = db.getSiblingDB(\"local\"); \
         if (!local.auth({{ user: \"__system\", pwd: process.env.KEYFILE, mechanism: \"SCRAM-SHA-1\" }})) throw new Error(\"the keyfile is refused\"); \
         const admin = db.getSiblingDB(\"admin\"); \
         if (admin.getUser(\"{user}\")) admin.changeUserPassword(\"{user}\", process.env.PASSWORD); \
         else admin.createUser({{ user: \"{user}\", pwd: process.env.PASSWORD, roles: [{{ role: \"root\", db: \"admin\" }}] }}); \
         if (!new Mongo(\"{uri}\").getDB(\"admin\").auth(\"{user}\", process.env.PASSWORD)) throw new Error(\"the password of the instance is refused after the restore\");"
    )
}

/// Writes the password in `$PASSWORD` into the YAML file MongoDB's Database Tools read with `--config`
/// (`printf` is a shell builtin: the password is on no command line). Generated passwords are
/// alphanumeric, so the quoted scalar needs no escaping.
/// The namespaces of MongoDB's users, roles and auth schema, which a restore leaves as the instance has
/// them (MongoDB manual, *System Collections*: `admin.system.users`, `admin.system.roles`,
/// `admin.system.version`).
pub const MONGO_USERS_NAMESPACES: &str = "admin.system.*";

const MONGO_TOOLS_CONFIG: &str = "printf 'password: \"%s\"\\n' \"$PASSWORD\" > /tmp/mongo-tools.yaml";

/// InfluxDB 2: sets `token` to the admin's first token, the operator token the image's setup made, read
/// through the signed-in session (`GET /api/v2/authorizations?user=`; the server indents its JSON, one
/// field a line: influxdata/influxdb v2.7.12 kit/transport/http/api.go, `prettyJSON`). The answer goes
/// to a file first: a pipeline's status is its last command's (POSIX Shell Command Language, 2.9.2
/// *Pipelines*) and the images' `sh` is dash (0.5.12 refuses `set -o pipefail`), so a failed request on the left of a `|`
/// would go unnoticed by `set -e`; and a missing token stops the script before any request without one.
fn influx_session_token(user: &str) -> String {
    format!(
        "curl -fsS -b /tmp/session \"$base/api/v2/authorizations?user={user}\" > /tmp/authorizations\n\
         token=$(sed -n 's/.*\"token\": *\"\\([^\"]*\\)\".*/\\1/p' /tmp/authorizations | head -n1)\n\
         [ -n \"$token\" ] || {{ echo 'no token of {user} in GET /api/v2/authorizations' >&2; exit 1; }}"
    )
}

/// The Job that backs `mi` up as backup `backup_id` to `key` in the store; `None` for services whose
/// backups are not made by a Job.
pub fn job(mi: &ManagedInstance, backup_id: Uuid, key: &str) -> Option<Child> {
    let namespace = mi.namespace().unwrap_or_default();
    let host = super::rotation::connect_host(&mi.spec.service, &mi.name_any(), &namespace);
    let dump = dump(mi, &host)?;
    let name = job_name(backup_id);
    const UPLOAD: &str = "set -eu\n\
         aws s3 cp /backup/artifact \"s3://$BUCKET/$KEY\" --endpoint-url \"$ENDPOINT\" --only-show-errors\n\
         size=$(stat -c %s /backup/artifact)\n\
         sum=$(sha256sum /backup/artifact | cut -d' ' -f1)\n\
         printf '{\"size\":%s,\"sha256\":\"%s\"}' \"$size\" \"$sum\" > /dev/termination-log\n";
    // Not labelled as one of the instance's objects: the instance's controller neither prunes nor
    // cleans it up; the backup runner owns it.
    let metadata = json!({"name": name, "namespace": namespace, "labels": {
        BACKUP_LABEL: backup_id.to_string(), BACKUP_OF_LABEL: mi.spec.instance_id, "app.kubernetes.io/part-of": "cp"}});
    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": super::job::DATA_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {
                    BACKUP_LABEL: backup_id.to_string(),
                    super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [{"name": "backup", "emptyDir": {}}],
                    "initContainers": [{
                        "name": "dump", "image": dump.image, "command": ["/bin/sh", "-c", dump.command],
                        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": credentials_name(mi), "key": "password"}}}],
                        "volumeMounts": [{"name": "backup", "mountPath": "/backup"}],
                    }],
                    "containers": [{
                        "name": "upload", "image": AWS_CLI_IMAGE,
                        "command": ["/bin/sh", "-c", UPLOAD],
                        "env": store_env(mi, key),
                        "volumeMounts": [{"name": "backup", "mountPath": "/backup"}],
                    }],
                },
            },
        },
    });
    let mut object = object;
    if dump.data_volume {
        // The first replica's claim (`<template>-<set>-<ordinal>`); ReadWriteOnce, so the pod must run on
        // the node that has it attached (core/v1 PersistentVolumeAccessMode: RWO is per node, not per
        // pod): the node of that replica's pod, which the StatefulSet controller labels with its name
        // (k8s.io/api v0.36.1 apps/v1/types.go, `StatefulSetPodNameLabel`). Affinity to any replica would put it beside replica 1
        // or 2, where replica 0's volume is not attached.
        let replica = format!("{}-0", mi.name_any());
        let pod = &mut object["spec"]["template"]["spec"];
        pod["volumes"].as_array_mut().expect("rendered above").push(json!(
            {"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{replica}"), "readOnly": true}}));
        pod["initContainers"][0]["volumeMounts"].as_array_mut().expect("rendered above").push(json!(
            {"name": "data", "mountPath": "/var/lib/grafana", "readOnly": true}));
        pod["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {STATEFULSET_POD_NAME_LABEL: replica}},
            "topologyKey": "kubernetes.io/hostname"}]}});
    }
    Some(Child { kind: ChildKind::Job, name, object })
}

/// The label the StatefulSet controller puts on each of its pods, with the pod's name (k8s.io/api
/// v0.36.1 apps/v1/types.go, `StatefulSetPodNameLabel`).
pub const STATEFULSET_POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// Label on a restore's Job pod naming the instance (not the instance label: the pod is not a replica).
pub const RESTORE_OF_LABEL: &str = "cp.example.com/restore-of";

/// The environment of a container that moves `key` to or from the store: where the store is and the
/// instance's keys, all from its store Secret ([`store_secret`]).
fn store_env(mi: &ManagedInstance, key: &str) -> Value {
    let secret = store_secret_name(mi);
    let from_secret = |name: &str, item: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": item}}});
    json!([
        from_secret("ENDPOINT", "endpoint"),
        from_secret("BUCKET", "bucket"),
        from_secret("AWS_ACCESS_KEY_ID", "access-key-id"),
        from_secret("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
        {"name": "KEY", "value": key},
    ])
}

/// Name of the Job that carries out restore `generation`.
pub fn restore_job_name(mi: &ManagedInstance, generation: u64) -> String {
    super::job::name(mi, &format!("-restore-{generation}"))
}

/// The Job that loads the backup at `key` into the running instance, replacing its data: the artifact is
/// downloaded by an init container, and the service's own tool loads it. `None` for services restored
/// otherwise (Grafana: see [`grafana_restore`]; PostgreSQL: see `barman`).
pub fn restore_job(mi: &ManagedInstance, generation: u64, key: &str) -> Option<Child> {
    let user = admin_user(&mi.spec.service)?;
    let namespace = mi.namespace().unwrap_or_default();
    let host = super::rotation::connect_host(&mi.spec.service, &mi.name_any(), &namespace);
    let port = service_port(&mi.spec.service);
    let name = restore_job_name(mi, generation);
    let (image, restore) = match mi.spec.service.as_str() {
        // `mongorestore --archive --gzip --drop --oplogReplay`: each collection in the dump replaces the
        // one of the same name, then the oplog the dump captured is applied, so the data is the set's at
        // one moment (MongoDB Database Tools, mongorestore; mongodb/mongo-tools 100.13.0
        // mongorestore/options.go `--oplogReplay`, "for recovering a point-in-time snapshot on a replica
        // set"). `--oplogReplay` refuses any `--nsExclude` (mongorestore/mongorestore.go: "cannot use
        // --oplogReplay with excludes specified"), so the dump's users and roles come back too, as they
        // were at that moment, with root's password of then; and replaying the oplog takes `anyAction` on
        // `anyResource`, which the `root` role lacks (Database Tools docs, mongorestore, *Required Access*:
        // "the restore role is insufficient to replay the oplog"). So the restore authenticates as the
        // set's internal user with the keyfile, the members' shared password ("keyfiles contain the shared
        // password for the members": MongoDB manual, *Self-Managed Internal/Membership Authentication*),
        // which no restored user can lock out; afterwards it sets root's password to the instance's
        // (the Secret's) again and checks a fresh sign-in with it. A backup made before MongoDB instances
        // were replica sets has no oplog (mongorestore/mongorestore.go: "no oplog file to replay"): it is
        // restored without replay. The keyfile and the password are read from the environment, so neither
        // is on a command line.
        "mongodb" => (
            format!("mongo:{}", mi.spec.version),
            format!(
                "set -eu\n\
                 printf 'password: \"%s\"\\n' \"$KEYFILE\" > /tmp/mongo-tools.yaml\n\
                 restore() {{\n\
                 \x20 mongorestore --uri '{uri}' --username __system --authenticationDatabase local \
                 --authenticationMechanism SCRAM-SHA-1 --config=/tmp/mongo-tools.yaml \
                 --archive=/backup/artifact --gzip --drop \"$@\"\n\
                 }}\n\
                 if ! restore --oplogReplay 2>/tmp/restore.log; then\n\
                 \x20 cat /tmp/restore.log >&2\n\
                 \x20 grep -q 'no oplog file to replay' /tmp/restore.log || exit 1\n\
                 \x20 restore\n\
                 else\n\
                 \x20 cat /tmp/restore.log >&2\n\
                 fi\n\
                 mongosh '{shell_uri}' --quiet --eval '{reset}'\n",
                uri = super::replset::uri(mi, "", &[]),
                shell_uri = super::replset::uri(mi, "admin", &[]),
                reset = mongo_reset_root_password(user, &super::replset::uri(mi, "admin", &[])),
            ),
        ),
        // The backup's buckets replace the instance's, its users and tokens stay: the instance's own
        // operator token (a session signed in with its password, as for the backup) deletes the org's
        // buckets but the system ones (`_…`), then `influx restore` without `--full` recreates each of the
        // backup's buckets with its data, creating the org if missing and skipping system buckets
        // (influx-cli v2.7 clients/restore/restore.go `partialRestore`, `restoreOrg`; it cannot restore into
        // an existing bucket: InfluxDB docs, "Restore data"). Without `--full` no KV store (users,
        // tokens) is restored, so no token of the backup's is needed and none is kept with the dump; a
        // rerun after a partial failure deletes what it restored and starts again. `influx bucket list`
        // pads its columns with tabs (influx-cli pkg/tabwriter: `tabwriter.NewWriter(…, '\t', 0)`), so a
        // name with spaces stays one field; the org is the project (`render::workload`,
        // `DOCKER_INFLUXDB_INIT_ORG`). The listing goes to a file before `awk` reads it, so a failed
        // listing stops the script (`set -e` sees only a pipeline's last command; see
        // `influx_session_token`) rather than restoring over buckets it did not delete.
        "influxdb" => (
            format!("influxdb:{}", mi.spec.version),
            format!(
                "set -eu\n\
                 base='http://{host}:{port}'\n\
                 tar -xzf /backup/artifact -C /backup\n\
                 {signin}\n\
                 {token}\n\
                 export INFLUX_TOKEN=\"$token\"\n\
                 influx bucket list --host \"$base\" --org '{org}' --hide-headers > /tmp/bucket-list\n\
                 awk -F '\\t+' '$2 !~ /^_/ {{print $1}}' /tmp/bucket-list > /tmp/buckets\n\
                 while read -r id; do influx bucket delete --host \"$base\" --id \"$id\" > /dev/null; done < /tmp/buckets\n\
                 influx restore /backup/dump --host \"$base\"\n",
                signin = influx_signin(user),
                token = influx_session_token(user),
                org = mi.spec.project,
            ),
        ),
        _ => return None,
    };
    let mut env = vec![
        json!({"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": credentials_name(mi), "key": "password"}}}),
    ];
    if mi.spec.service == "mongodb" {
        env.push(json!({"name": "KEYFILE", "valueFrom": {"secretKeyRef": {
            "name": super::replset::keyfile_secret_name(mi), "key": super::replset::KEYFILE_KEY}}}));
    }
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": super::labels(mi)});
    // Written once: the generation label would change with the instance.
    metadata["labels"].as_object_mut().map(|l| l.remove(super::GENERATION_LABEL));
    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": super::job::DATA_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {
                    RESTORE_OF_LABEL: mi.spec.instance_id,
                    super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [{"name": "backup", "emptyDir": {}}],
                    "initContainers": [{
                        "name": "download", "image": AWS_CLI_IMAGE,
                        "command": ["/bin/sh", "-c", "aws s3 cp \"s3://$BUCKET/$KEY\" /backup/artifact --endpoint-url \"$ENDPOINT\" --only-show-errors"],
                        "env": store_env(mi, key),
                        "volumeMounts": [{"name": "backup", "mountPath": "/backup"}],
                    }],
                    "containers": [{
                        "name": "restore", "image": image,
                        "command": ["/bin/sh", "-c", restore],
                        "env": env,
                        "volumeMounts": [{"name": "backup", "mountPath": "/backup"}],
                    }],
                },
            },
        },
    });
    Some(Child { kind: ChildKind::Job, name, object })
}

/// Grafana's database holds its users, so a restored one brings back the admin password of the backup's
/// time; `GF_SECURITY_ADMIN_PASSWORD` is read only when Grafana first creates the admin. So after the
/// restore init container, a second one in Grafana's own image (`main`: its image, environment and
/// mounts) sets the instance's password again with `grafana cli admin reset-admin-password
/// --password-from-stdin` (grafana/grafana v11.6.0 pkg/cmd/grafana-cli/commands/commands.go,
/// `adminCommands`; `GF_PATHS_HOME` is the image's, packaging/docker/Dockerfile), from the Secret's
/// password in its environment, so it is on no command line. It runs at every start of a restored pod:
/// the Secret's password is the instance's password (a rotation changes both), so it changes nothing
/// then.
pub fn grafana_reset_admin_password(main: &Value) -> Value {
    const SCRIPT: &str = "set -eu\n\
         printf '%s' \"$GF_SECURITY_ADMIN_PASSWORD\" | grafana cli --homepath \"$GF_PATHS_HOME\" --config \"$GF_PATHS_CONFIG\" \
         admin reset-admin-password --password-from-stdin\n";
    json!({
        "name": "reset-admin-password", "image": main["image"], "command": ["/bin/sh", "-c", SCRIPT],
        "env": main["env"], "volumeMounts": main["volumeMounts"],
    })
}

/// Grafana's restore: an init container of its StatefulSet that, when the restore generation the data
/// volume records is not `generation`, downloads the backed-up database over `grafana.db` before Grafana
/// starts (SQLite's database is one file; a copy made while Grafana runs could be overwritten by it).
/// The pod template carries the generation, so asking for a restore rolls the pods. The file is handed to
/// Grafana's user (uid 472, gid 0: Grafana docs, "Run Grafana Docker image").
pub fn grafana_restore(mi: &ManagedInstance, generation: u64, key: &str) -> Value {
    let script = format!(
        "set -eu\n\
         marker=/var/lib/grafana/.cp-restore-generation\n\
         if [ \"$(cat \"$marker\" 2>/dev/null)\" = '{generation}' ]; then exit 0; fi\n\
         aws s3 cp \"s3://$BUCKET/$KEY\" /var/lib/grafana/grafana.db.restoring --endpoint-url \"$ENDPOINT\" --only-show-errors\n\
         rm -f /var/lib/grafana/grafana.db-journal /var/lib/grafana/grafana.db-wal /var/lib/grafana/grafana.db-shm\n\
         mv /var/lib/grafana/grafana.db.restoring /var/lib/grafana/grafana.db\n\
         echo '{generation}' > \"$marker\"\n\
         chown 472:0 /var/lib/grafana/grafana.db \"$marker\"\n"
    );
    json!({
        "name": "restore", "image": AWS_CLI_IMAGE, "command": ["/bin/sh", "-c", script],
        "env": store_env(mi, key),
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/grafana"}],
    })
}

//! Credentials and their rotation: where each service's password lives in the cluster, and the Job that
//! makes a running service accept a new one.
//!
//! The images of MongoDB, InfluxDB and Grafana read the generated password only when they initialise an
//! empty data directory, so replacing the Secret changes nothing for a running service: a rotation runs
//! the service's own password change with the current password, then swaps the Secret. PostgreSQL's
//! password belongs to CloudNativePG, which applies a change of its application Secret itself.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::{Child, ChildKind, admin_user, credentials_name, metadata, service_port};
use crate::crd::ManagedInstance;

/// Annotation on the Secret holding the password: the credentials generation (instance version of the
/// rotation) that password answers. Absent: the password made at provisioning (generation 0).
pub const GENERATION_ANNOTATION: &str = "cp.example.com/credentials-generation";
/// Key of the password a rotation in progress moves to, beside `password` until the service accepts it.
pub const NEXT_PASSWORD_KEY: &str = "next-password";
/// Label on a rotation Job's pod naming the instance (never the instance label: the pod is not one of the
/// instance's replicas and must not count as one).
pub const ROTATION_OF_LABEL: &str = "cp.example.com/rotation-of";

/// Name of the Secret CloudNativePG makes with the application user's credentials: `<cluster>-app` when
/// the bootstrap names no secret of its own (cloudnative-pg v1.30 `api/v1/cluster_funcs.go`,
/// `GetApplicationSecretName`; the suffix is `ApplicationUserSecretSuffix` in `cluster_types.go`).
pub fn postgres_app_secret_name(mi: &ManagedInstance) -> String {
    format!("{}-app", mi.name_any())
}

/// Host clients connect to: CloudNativePG's read-write service `<cluster>-rw` for PostgreSQL
/// (`GetServiceReadWriteName`), the instance's own Service otherwise.
pub fn connect_host(service: &str, name: &str, namespace: &str) -> String {
    if service == "postgresql" {
        format!("{name}-rw.{namespace}.svc")
    } else {
        format!("{name}.{namespace}.svc")
    }
}

/// The string data of CloudNativePG's application Secret for `password`, every key that embeds the
/// password rebuilt as the operator builds them (cloudnative-pg v1.30 `pkg/specs/secrets.go`,
/// `CreateSecret`: `password`, `pgpass`, `uri`, `jdbc-uri`, `fqdn-uri`, `fqdn-jdbc-uri`). A key left with
/// the old password would hand clients a connection string that no longer works. `host` is the short
/// service name the Secret carries, `namespace` its namespace. The user name and the password are
/// alphanumeric (the agent generates them so, as CloudNativePG does), so nothing needs escaping in a URI.
pub fn postgres_secret_data(
    username: &str,
    dbname: &str,
    host: &str,
    namespace: &str,
    password: &str,
) -> Value {
    let port = service_port("postgresql");
    let userinfo = format!("{username}:{password}");
    let short = format!("{host}.{namespace}:{port}");
    // CloudNativePG's own `KubernetesClusterDomain` default (internal/configuration).
    let fqdn = format!("{host}.{namespace}.svc.cluster.local:{port}");
    // Go's `url.Values.Encode` sorts the keys: password, then user.
    let jdbc = |h: &str| format!("jdbc:postgresql://{h}/{dbname}?password={password}&user={username}");
    json!({
        "password": password,
        "pgpass": format!("{host}:{port}:{dbname}:{username}:{password}\n"),
        "uri": format!("postgresql://{userinfo}@{short}/{dbname}"),
        "jdbc-uri": jdbc(&short),
        "fqdn-uri": format!("postgresql://{userinfo}@{fqdn}/{dbname}"),
        "fqdn-jdbc-uri": jdbc(&fqdn),
    })
}

/// Name of the Job that carries out rotation `generation`.
pub fn job_name(mi: &ManagedInstance, generation: u64) -> String {
    super::job::name(mi, &format!("-rotate-{generation}"))
}

/// The Job that makes the running service accept the Secret's `next-password` in place of `password`,
/// for the services whose image reads the password only at initialisation. It first tries the new
/// password, so a Job run again after a change that already happened succeeds without changing anything.
/// `None` for PostgreSQL (CloudNativePG applies its Secret itself).
pub fn job(mi: &ManagedInstance, generation: u64) -> Option<Child> {
    let user = admin_user(&mi.spec.service)?;
    let namespace = mi.namespace().unwrap_or_default();
    let host = connect_host(&mi.spec.service, &mi.name_any(), &namespace);
    let port = service_port(&mi.spec.service);
    let (image, script) = match mi.spec.service.as_str() {
        // mongosh ships in the mongo image (6.0 and later); `changeUserPassword` is the documented way
        // (MongoDB manual, db.changeUserPassword()). mongosh connects without credentials and
        // authenticates inside the script from its environment (`db.auth` throws when they are wrong,
        // which ends mongosh with a non-zero status), so no password is on its command line. It connects
        // to the replica set (`replicaSet=`), so the change is made once, on the primary, and reaches
        // every member by replication (users live in the replicated `admin.system.users`: MongoDB
        // manual, *System Collections*).
        "mongodb" => (
            format!("mongo:{}", mi.spec.version),
            format!(
                "set -eu\n\
                 uri='{uri}'\n\
                 if mongosh \"$uri\" --quiet --eval 'db.getSiblingDB(\"admin\").auth(\"{user}\", process.env.NEW_PASSWORD)' >/dev/null 2>&1; then exit 0; fi\n\
                 mongosh \"$uri\" --quiet --eval 'const admin = db.getSiblingDB(\"admin\"); admin.auth(\"{user}\", process.env.OLD_PASSWORD); admin.changeUserPassword(\"{user}\", process.env.NEW_PASSWORD)'\n",
                uri = super::replset::uri(mi, "admin", &[]),
            ),
        ),
        // InfluxDB 2: every route but a few (`POST /api/v2/signin`, setup) needs a token or a session
        // (influxdata/influxdb v2.7.12 http/platform_handler.go `RegisterNoAuthRoute`,
        // http/authentication_middleware.go `ProbeAuthScheme`: a Basic header is neither, so alone it is
        // 401). `POST /api/v2/signin` with Basic credentials answers 204 and sets the session cookie
        // (session/http_server.go); `PUT /api/v2/users/{{id}}/password` then compares the Basic
        // credentials' password and sets the body's (tenant/http_server_user.go, handlePutUserPassword →
        // CompareAndSetPassword), so it carries both. The user's id comes from `GET /api/v2/me`.
        "influxdb" => (
            CURL_IMAGE.to_owned(),
            format!(
                "set -eu\n\
                 base='http://{host}:{port}'\n\
                 {new_credentials}\n\
                 {old_credentials}\n\
                 if curl -fsS -o /dev/null -X POST -K /tmp/new.curl \"$base/api/v2/signin\"; then exit 0; fi\n\
                 curl -fsS -c /tmp/session -o /dev/null -X POST -K /tmp/old.curl \"$base/api/v2/signin\"\n\
                 id=$(curl -fsS -b /tmp/session \"$base/api/v2/me\" | sed -n 's/.*\"id\": *\"\\([0-9a-f]*\\)\".*/\\1/p' | head -n1)\n\
                 printf '{{\"password\":\"%s\"}}' \"$NEW_PASSWORD\" > /tmp/body\n\
                 curl -fsS -o /dev/null -X PUT -b /tmp/session -K /tmp/old.curl -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/v2/users/$id/password\"\n",
                new_credentials = curl_credentials("/tmp/new.curl", user, "NEW_PASSWORD"),
                old_credentials = curl_credentials("/tmp/old.curl", user, "OLD_PASSWORD"),
            ),
        ),
        // Grafana: `PUT /api/user/password` changes the signed-in user's password given the old one
        // (Grafana HTTP API, User API, "Change Password"; body `oldPassword`, `newPassword`).
        _ => (
            CURL_IMAGE.to_owned(),
            format!(
                "set -eu\n\
                 base='http://{host}:{port}'\n\
                 {new_credentials}\n\
                 {old_credentials}\n\
                 if curl -fsS -o /dev/null -K /tmp/new.curl \"$base/api/user\"; then exit 0; fi\n\
                 printf '{{\"oldPassword\":\"%s\",\"newPassword\":\"%s\"}}' \"$OLD_PASSWORD\" \"$NEW_PASSWORD\" > /tmp/body\n\
                 curl -fsS -o /dev/null -X PUT -K /tmp/old.curl -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/user/password\"\n",
                new_credentials = curl_credentials("/tmp/new.curl", user, "NEW_PASSWORD"),
                old_credentials = curl_credentials("/tmp/old.curl", user, "OLD_PASSWORD"),
            ),
        ),
    };
    let name = job_name(mi, generation);
    let secret = credentials_name(mi);
    let key_ref = |key: &str| json!({"secretKeyRef": {"name": secret, "key": key}});
    let mut object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(mi, &name),
        "spec": {
            // A few tries for a service that is briefly away; a password that is wrong stays wrong.
            "backoffLimit": 3,
            "activeDeadlineSeconds": super::job::ROTATION_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {
                    ROTATION_OF_LABEL: mi.spec.instance_id,
                    super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "rotate",
                        "image": image,
                        "command": ["/bin/sh", "-c", script],
                        "env": [
                            {"name": "OLD_PASSWORD", "valueFrom": key_ref("password")},
                            {"name": "NEW_PASSWORD", "valueFrom": key_ref(NEXT_PASSWORD_KEY)},
                        ],
                    }],
                },
            },
        },
    });
    object["metadata"]["annotations"] = json!({GENERATION_ANNOTATION: generation.to_string()});
    Some(Child { kind: ChildKind::Job, name, object })
}

/// A small image with a shell and curl, for the services whose password changes over HTTP.
pub(super) const CURL_IMAGE: &str = "curlimages/curl:8.11.1";

/// A shell line writing a curl config file (`curl -K FILE`: each line a long option, curl's manual,
/// `--config`) that sends `user` and the password in the environment variable `var` as Basic
/// credentials. `printf` is a shell builtin, so the password is on no command line (`ps` shows every
/// process's arguments to everyone on the node); passwords are generated alphanumeric, so nothing needs
/// escaping.
pub(super) fn curl_credentials(file: &str, user: &str, var: &str) -> String {
    format!("printf 'user = \"%s:%s\"\\n' '{user}' \"${var}\" > {file}")
}

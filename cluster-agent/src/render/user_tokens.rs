//! Users whose secret the service generates (issue 27): an InfluxDB user is an authorization (a token) on
//! the instance's bucket; a Grafana user a service account with its role, and a token of it (the scripts:
//! `render::token_scripts`). The agent cannot choose such a token, so a Job asks the service for it and hands
//! it straight to the cluster: it PATCHes the token into the user's Secret (pre-made by the agent,
//! `users::secret_name`, without a password) through the in-cluster API, so no log, event, KV bucket or
//! Job definition ever holds it.
//!
//! The Job runs as a ServiceAccount of its own ([`account_name`]) bound to a Role that allows `get` and
//! `patch` of exactly the users' Secrets (`resourceNames`; Kubernetes docs, *Using RBAC Authorization*,
//! "Referring to resources": `get`, `patch`, `update` and `delete` requests can be restricted by name)
//! and nothing else. It reads its credentials where the kubelet projects them into every container of a
//! pod whose account token is mounted: `/var/run/secrets/kubernetes.io/serviceaccount/token` (the bearer
//! token), `…/ca.crt` (the bundle that verifies the API server's certificate), and reaches the API server
//! at `https://kubernetes.default.svc` (Kubernetes docs, *Accessing the Kubernetes API from a Pod*,
//! "Directly accessing the REST API"). The bearer token goes to curl in a config file, never on a command
//! line.
//!
//! One Job per users generation applies the whole set, like MongoDB's (`users::mongodb_job`): a user
//! without a token, or whose rotation was asked, gets a new authorization, its token and id PATCHed into
//! its Secret, then its previous authorization (if any) is deleted; a deleted user's authorization is
//! deleted (its id read from its Secret, which the agent keeps until the Job is done). A deletion of an
//! authorization already gone (404) counts as done, so a rerun is harmless.
//!
//! InfluxDB 2.7 (influxdata/influxdb v2.7.12), authenticated as the rotation is (`rotation::job`): a
//! session from `POST /api/v2/signin` with the admin's Basic credentials (a Basic header alone is 401:
//! `http/authentication_middleware.go`, `ProbeAuthScheme`). Then:
//! - `GET /api/v2/buckets?org=<org>&name=<bucket>` (`tenant/http_server_bucket.go`) names the instance's
//!   bucket and its organization's id;
//! - `POST /api/v2/authorizations` (`authorization/http_server.go`, `handlePostAuthorization`) with
//!   `orgID` (400 "org id required" without it; `authorization/service.go` `CreateAuthorization`: 400
//!   "unable to create token" for an organization that does not exist), a `description` and
//!   `permissions` (400 "authorization must include permissions" without any), each an `action` (`read` or
//!   `write`) on a `resource` of `type: buckets` with the bucket's `id` and `orgID`; it answers 201 with
//!   the authorization's `id` and `token` (`authResponse`);
//! - `DELETE /api/v2/authorizations/{id}` answers 204, and 404 when there is no such authorization.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::{
    Child, ChildKind, credentials_name, metadata,
    users::{USERS_GENERATION_ANNOTATION, secret_name},
};
use crate::crd::{ManagedInstance, UserTarget};

/// Label on a users Job's pod naming the instance: the namespace's egress policy for the API server
/// (`render::egress`) admits pods carrying it, and no other pod of the project's.
pub const WRITES_SECRETS_LABEL: &str = "cp.example.com/writes-user-secrets";
/// Key of a token user's Secret holding the id of its authorization in the service (not a secret; what
/// revoking it takes).
pub const TOKEN_ID_KEY: &str = "id";
/// Where the kubelet projects a pod's service account credentials (see the module's documentation).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The API server's address inside the cluster.
pub const API_SERVER: &str = "https://kubernetes.default.svc";
/// The bucket every InfluxDB instance is set up with (`render::workload`, `DOCKER_INFLUXDB_INIT_BUCKET`).
pub const INFLUXDB_BUCKET: &str = "default";
/// A non-root uid for the curl image's pod (the image's own `curl_user` is 100): Pod Security
/// `restricted` requires `runAsNonRoot` (k8s.io/pod-security-admission v0.36.1
/// `policy/check_runAsNonRoot.go`).
const CURL_UID: u32 = 100;

/// Whether the users of `service` hold a token the service made (rather than a password the agent made).
pub fn holds_token(service: &str) -> bool {
    service == "influxdb" || service == "grafana"
}

/// Key of a Grafana user's Secret holding the id of its current token (what replacing it takes).
pub const GRAFANA_TOKEN_ID_KEY: &str = "token-id";

/// The Grafana organization role a catalog role is: `Editor` or `Viewer` (anything else is `Viewer`).
pub fn grafana_role(role: &str) -> &'static str {
    if role == "Editor" { "Editor" } else { "Viewer" }
}

/// Name of the ServiceAccount, Role and RoleBinding of an instance's users Job.
pub fn account_name(mi: &ManagedInstance) -> String {
    super::job::name(mi, "-users")
}

/// Name of the Job that applies users generation `generation` of a token-holding instance.
pub fn job_name(mi: &ManagedInstance, generation: u64) -> String {
    super::job::name(mi, &format!("-users-{generation}"))
}

/// The ServiceAccount the users Job runs as.
pub fn service_account(mi: &ManagedInstance) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(mi, &account_name(mi))})
}

/// The Role of the users Job: `get` and `patch` of the Secrets named `secrets`, nothing else.
pub fn role(mi: &ManagedInstance, secrets: &[String]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata(mi, &account_name(mi)),
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": ["get", "patch"]}],
    })
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(mi: &ManagedInstance) -> Value {
    let name = account_name(mi);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata(mi, &name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": mi.namespace()}],
    })
}

/// The InfluxDB actions a catalog role grants on the bucket: `write` reads and writes, `read` reads.
pub fn influxdb_actions(role: &str) -> &'static [&'static str] {
    match role {
        "write" => &["read", "write"],
        _ => &["read"],
    }
}

/// One user as the Job sees it: whether it needs a new token (`renew`: none yet, or a rotation asked).
pub struct TokenUser<'a> {
    /// the user
    pub user: &'a UserTarget,
    /// whether the Job makes it a new token
    pub renew: bool,
}

/// The Job applying users generation `generation` of an InfluxDB or Grafana instance: `users` as they
/// stand, `revoked` the Secrets of deleted users (with each user's name) whose authorizations (service
/// accounts) go (see the
/// module's documentation).
pub fn job(
    mi: &ManagedInstance,
    generation: u64,
    users: &[TokenUser],
    revoked: &[(String, String)],
) -> Child {
    let grafana = mi.spec.service == "grafana";
    let mut lines = super::token_scripts::prelude(mi);
    lines.extend(if grafana { super::token_scripts::grafana() } else { super::token_scripts::influxdb(mi) });
    let mut env = vec![json!({"name": "ADMIN_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": credentials_name(mi), "key": "password"}}})];
    let key_ref = |name: String, secret: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": true}}});
    for (i, TokenUser { user, renew }) in users.iter().enumerate() {
        let secret = secret_name(&mi.name_any(), &user.name);
        env.push(key_ref(format!("TOKEN_{i}"), &secret, "password"));
        env.push(key_ref(format!("TOKEN_ID_{i}"), &secret, TOKEN_ID_KEY));
        // Kept: a user that has its token and asked for no new one.
        let condition = if *renew { "true".to_owned() } else { format!("[ -z \"${{TOKEN_{i}:-}}\" ]") };
        let (name, generation) = (&user.name, user.generation);
        let line = if grafana {
            env.push(key_ref(format!("TOKEN_KEY_ID_{i}"), &secret, GRAFANA_TOKEN_ID_KEY));
            format!(
                "if {condition}; then grant '{name}' '{secret}' '{generation}' \"${{TOKEN_ID_{i}:-}}\" \"${{TOKEN_KEY_ID_{i}:-}}\" '{role}'; fi",
                role = grafana_role(&user.role),
            )
        } else {
            let permissions = influxdb_actions(&user.role)
                .iter()
                .map(|action| {
                    format!(
                        "{{\"action\":\"{action}\",\"resource\":{{\"type\":\"buckets\",\"id\":\"'\"$bucket\"'\",\"orgID\":\"'\"$org\"'\"}}}}"
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            format!(
                "if {condition}; then grant '{name}' '{secret}' '{generation}' \"${{TOKEN_ID_{i}:-}}\" '{permissions}'; fi"
            )
        };
        lines.push(line);
    }
    for (i, (secret, user)) in revoked.iter().enumerate() {
        env.push(key_ref(format!("REVOKED_ID_{i}"), secret, TOKEN_ID_KEY));
        lines.push(format!("revoke_user '{user}' \"${{REVOKED_ID_{i}:-}}\""));
    }
    lines.push("exit 0".to_owned());
    let script = lines.join("\n") + "\n";
    let name = job_name(mi, generation);
    let mut object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(mi, &name),
        "spec": {
            // A few tries for a service that is briefly away; a refusal stays a refusal.
            "backoffLimit": 3,
            "activeDeadlineSeconds": super::job::ROTATION_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {
                    super::job::CLIENT_OF_LABEL: mi.spec.instance_id,
                    WRITES_SECRETS_LABEL: mi.spec.instance_id,
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": account_name(mi),
                    "automountServiceAccountToken": true,
                    "securityContext": super::job::restricted_pod(),
                    "containers": [{
                        "name": "users",
                        "image": super::rotation::CURL_IMAGE,
                        "command": ["/bin/sh", "-c", script],
                        "env": env,
                        "securityContext": super::job::restricted_container(CURL_UID),
                    }],
                },
            },
        },
    });
    object["metadata"]["annotations"] = json!({USERS_GENERATION_ANNOTATION: generation.to_string()});
    Child { kind: ChildKind::Job, name, object }
}

//! CloudNativePG's declarative role management, as its instance manager reports it in a `Cluster`'s
//! status (v1.30.0 `api/v1/cluster_types.go`, `ManagedRoles`; written by
//! `internal/management/controller/roles/reconciler.go` and `runnable.go`):
//!
//! - `byStatus`: the role names in each `RoleStatus` — `reconciled` (in the database as the spec says, or
//!   absent as `ensure: absent` asks), `pending-reconciliation`, `not-managed` (in the database, not in the
//!   spec: here `app`, the owner `initdb` makes), `reserved` (`postgres`, `streaming_replica`,
//!   `pkg/postgres/roles.go` `IsRoleReserved`);
//! - `cannotReconcile`: per role, why it cannot be applied (here: its password Secret is missing or names
//!   another user, the messages of `runnable.go` `getPassword`);
//! - `passwordStatus`: per role, the last transaction id and the resource version of the password Secret
//!   applied; kept for roles no longer updated, as the instance manager merges it.
//!
//! The simulated database is the spec once applied: a present role takes its Secret's password (the
//! "engine's record" is that Secret at the resource version in `passwordStatus`), an absent one is
//! dropped. Roles are processed only once the Cluster is ready, as the instance manager skips them before
//! (`runnable.go`, `reconcile`: "database not ready, skipping roles reconciling").
//!
//! [`managed_roles_status`] and [`remove_missing`] are pure, and also serve the real-API-server harness's
//! stand-in (`tests/kubeenv/src/roles.rs`), so both backends report roles by the same reading.

use serde_json::{Map, Value, json};

use crate::server::Simulator;

const CNPG_CLUSTERS: &str = "clusters.postgresql.cnpg.io";
const SECRETS: &str = "secrets";

/// Label of the agent's user Secrets (cluster-agent `render::users`).
pub(crate) const USER_LABEL: &str = "cp.example.com/user";

/// Reconciles the managed roles of Cluster `name` and writes its `managedRolesStatus` when it changed.
pub(crate) fn reconcile(sim: &Simulator, namespace: &str, name: &str) {
    let mut store = sim.store();
    let Some(clusters) = store.types().iter().find(|t| t.key() == CNPG_CLUSTERS).cloned() else { return };
    let Some(secrets) = store.types().iter().find(|t| t.key() == SECRETS).cloned() else { return };
    let Some(cluster) = store.get(&clusters, namespace, name) else { return };
    let roles = cluster["spec"]["managed"]["roles"].as_array().cloned().unwrap_or_default();
    let ready = cluster["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if !cluster["metadata"]["deletionTimestamp"].is_null()
        || !ready
        || (roles.is_empty() && cluster["status"]["managedRolesStatus"].is_null())
    {
        return;
    }
    let current = &cluster["status"]["managedRolesStatus"];
    let status = managed_roles_status(&cluster, |name| store.get(&secrets, namespace, name));
    if *current == status {
        return;
    }
    // A merge patch keeps the keys it does not name: the ones gone are named with null.
    let mut patch = status;
    remove_missing(&mut patch, current);
    let _ = store.merge_patch(
        &clusters,
        namespace,
        name,
        &json!({"status": {"managedRolesStatus": patch}}),
        true,
    );
}

/// Sets to null, in the merge patch `patch`, every key of `old` that `patch` lacks, at every depth.
pub fn remove_missing(patch: &mut Value, old: &Value) {
    let (Some(patch), Some(old)) = (patch.as_object_mut(), old.as_object()) else { return };
    for (key, value) in old {
        match patch.get_mut(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(new) => remove_missing(new, value),
        }
    }
}

/// The `managedRolesStatus` CloudNativePG's instance manager writes for `cluster` once it has applied its
/// roles, with the password Secrets `secret` finds by name (see the module's documentation).
pub fn managed_roles_status(cluster: &Value, secret: impl Fn(&str) -> Option<Value>) -> Value {
    let roles = cluster["spec"]["managed"]["roles"].as_array().cloned().unwrap_or_default();
    let current = &cluster["status"]["managedRolesStatus"];
    let mut passwords = current["passwordStatus"].as_object().cloned().unwrap_or_default();
    let mut reconciled = Vec::new();
    let mut pending = Vec::new();
    let mut cannot = Map::new();
    for role in &roles {
        let Some(role_name) = role["name"].as_str() else { continue };
        if role["ensure"] == "absent" {
            reconciled.push(role_name.to_owned());
            continue;
        }
        let secret_name = role["passwordSecret"]["name"].as_str().unwrap_or_default();
        let secret = secret(secret_name);
        let username = secret.as_ref().and_then(|s| decoded(s, "username"));
        match (secret, username) {
            (None, _) => {
                pending.push(role_name.to_owned());
                cannot.insert(
                    role_name.into(),
                    json!([format!(
                        "failed to get password secret {secret_name}: secrets \"{secret_name}\" not found"
                    )]),
                );
            }
            (Some(_), username) if username.as_deref().map(str::trim) != Some(role_name) => {
                pending.push(role_name.to_owned());
                cannot.insert(
                    role_name.into(),
                    json!([format!(
                        "the username in secret \"{secret_name}\" does not match role \"{role_name}\""
                    )]),
                );
            }
            (Some(secret), _) => {
                let version = secret["metadata"]["resourceVersion"].clone();
                let applied = &passwords.get(role_name).cloned().unwrap_or(Value::Null);
                if applied["resourceVersion"] != version {
                    // A CREATE or ALTER ROLE: a new transaction.
                    let transaction = version.as_str().and_then(|v| v.parse::<i64>().ok()).unwrap_or(1);
                    passwords.insert(
                        role_name.into(),
                        json!({"transactionID": transaction, "resourceVersion": version}),
                    );
                }
                reconciled.push(role_name.to_owned());
            }
        }
    }
    reconciled.sort();
    pending.sort();
    let mut by_status = Map::new();
    by_status.insert("not-managed".into(), json!(["app"]));
    by_status.insert("reserved".into(), json!(["postgres", "streaming_replica"]));
    if !reconciled.is_empty() {
        by_status.insert("reconciled".into(), json!(reconciled));
    }
    if !pending.is_empty() {
        by_status.insert("pending-reconciliation".into(), json!(pending));
    }
    let mut status = json!({"byStatus": by_status});
    if !cannot.is_empty() {
        status["cannotReconcile"] = Value::Object(cannot);
    }
    if !passwords.is_empty() {
        status["passwordStatus"] = Value::Object(passwords);
    }
    status
}

/// After a change of a user's Secret: the Clusters of its namespace whose roles name it.
pub(crate) fn secret_changed(sim: &Simulator, namespace: &str, secret: &Value) {
    let Some(secret_name) = secret["metadata"]["name"].as_str() else { return };
    let names: Vec<String> = {
        let store = sim.store();
        let Some(clusters) = store.types().iter().find(|t| t.key() == CNPG_CLUSTERS).cloned() else { return };
        store
            .list(&clusters, Some(namespace), None)
            .iter()
            .filter(|c| {
                c["spec"]["managed"]["roles"]
                    .as_array()
                    .is_some_and(|roles| roles.iter().any(|r| r["passwordSecret"]["name"] == secret_name))
            })
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    for name in names {
        reconcile(sim, namespace, &name);
    }
}

/// A Secret's value, from `data` (base64) or `stringData`.
fn decoded(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    if let Some(text) = secret["stringData"][key].as_str() {
        return Some(text.to_owned());
    }
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

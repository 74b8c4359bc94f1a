//! Rendering an instance's per-application users (issue 27): the Secret holding each user's password,
//! made once by the agent in the cluster (like the instance's own credentials); for PostgreSQL the
//! Cluster's declarative roles, for MongoDB the Job that applies the users with mongosh
//! ([`mongodb_job`]).
//!
//! PostgreSQL's users are CloudNativePG's managed roles (v1.30.0 `api/v1/cluster_types.go`,
//! `ManagedConfiguration.Roles` of type `RoleConfiguration`): each user is a role with `login: true`,
//! `ensure: present`, `passwordSecret` naming its Secret, and `inRoles` granting its catalog role through
//! PostgreSQL's predefined roles (PostgreSQL 14+ docs, *Predefined Roles*: `pg_read_all_data` reads every
//! table, view and sequence, `pg_write_all_data` writes them). CloudNativePG reads the password from the
//! Secret, which "must follow the `kubernetes.io/basic-auth` format and contain both a `username` and a
//! `password` field" whose username is the role's name (`internal/management/controller/roles/runnable.go`,
//! `getPassword`: "the username in secret %q does not match role %q" otherwise), and applies a new
//! password whenever the Secret's resource version differs from the one in `status.managedRolesStatus.
//! passwordStatus` (`roles.go`, `passwordNeedsUpdating`).
//!
//! A deleted user stays in the list as `ensure: absent` (without a password Secret, which goes at once):
//! CloudNativePG then drops the role and lists it as `reconciled` once it is gone (`roles.go`,
//! `evaluateNextRoleActions`: a role in the spec, absent from the database, with `ensure: absent`), whereas
//! a role simply left out of the list would stay in the database as `not-managed`.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::{Child, ChildKind, GENERATION_LABEL, metadata};
use crate::crd::{ManagedInstance, UserTarget};

/// Label naming the user a Secret holds the password of.
pub const USER_LABEL: &str = "cp.example.com/user";
/// Annotation of a user's Secret: the user's generation (creation or last rotation) its password answers.
pub const PASSWORD_GENERATION_ANNOTATION: &str = "cp.example.com/password-generation";

/// Name of the Secret holding the password of user `user` of the instance called `instance`:
/// `<instance>.user.<user>` with `_` as `-`. Instance names are DNS labels (no dot) and user names have
/// no `-`, so no two users, and no other object of the agent's, share a name.
pub fn secret_name(instance: &str, user: &str) -> String {
    format!("{instance}.user.{}", user.replace('_', "-"))
}

/// The Secret of `user` with `password` (`kubernetes.io/basic-auth`, as CloudNativePG requires). Created
/// when absent, written again only to give the user a new password.
pub fn secret(mi: &ManagedInstance, user: &UserTarget, password: &str) -> Child {
    let name = secret_name(&mi.name_any(), &user.name);
    let mut object = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": metadata(mi, &name),
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": user.name, "password": password},
    });
    // The generation label would change on every update of the instance; the Secret is written once.
    if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
        labels.remove(GENERATION_LABEL);
        labels.insert(USER_LABEL.into(), json!(user.name));
        // "Password changes in labeled Secrets are applied immediately, while changes in unlabeled
        // Secrets are only applied at a subsequent reconciliation" (CloudNativePG v1.30.0
        // docs/src/declarative_role_management.md, *Password management*): a rotation is not left waiting.
        labels.insert("cnpg.io/reload".into(), json!("true"));
    }
    object["metadata"]["annotations"] = json!({PASSWORD_GENERATION_ANNOTATION: user.generation.to_string()});
    Child { kind: ChildKind::Secret, name, object }
}

/// The PostgreSQL roles a catalog role grants (see the module's documentation).
pub fn postgres_in_roles(role: &str) -> &'static [&'static str] {
    match role {
        "readwrite" => &["pg_read_all_data", "pg_write_all_data"],
        _ => &["pg_read_all_data"],
    }
}

/// The Cluster's `spec.managed.roles` for the instance's users (present ones only; see
/// [`keep_absent_roles`] for deleted ones).
pub fn postgres_roles(mi: &ManagedInstance) -> Vec<Value> {
    mi.spec
        .users
        .iter()
        .map(|user| {
            json!({
                "name": user.name,
                "ensure": "present",
                "login": true,
                "passwordSecret": {"name": secret_name(&mi.name_any(), &user.name)},
                "inRoles": postgres_in_roles(&user.role),
            })
        })
        .collect()
}

/// Keeps, as `ensure: absent`, every role the current Cluster lists that the instance no longer has, so
/// CloudNativePG drops it from the database (a role left out would stay there, `not-managed`).
pub fn keep_absent_roles(desired: &mut Child, current: &Value) {
    if desired.kind != ChildKind::PostgresCluster {
        return;
    }
    let wanted: Vec<String> = desired.object["spec"]["managed"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let gone: Vec<Value> = current["spec"]["managed"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .filter(|name| !wanted.iter().any(|w| w == name))
        .map(|name| json!({"name": name, "ensure": "absent"}))
        .collect();
    if gone.is_empty() {
        return;
    }
    let roles = &mut desired.object["spec"]["managed"]["roles"];
    if !roles.is_array() {
        *roles = json!([]);
    }
    if let Some(roles) = roles.as_array_mut() {
        roles.extend(gone);
        roles.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
}

/// The roles of a Cluster that are to be absent.
pub fn absent_roles(cluster: &Value) -> Vec<String> {
    cluster["spec"]["managed"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["ensure"] == "absent")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// MongoDB's built-in role a catalog role grants, on the `admin` database: `readWrite` →
/// `readWriteAnyDatabase`, `read` → `readAnyDatabase` (MongoDB manual, *Built-In Roles*, "All-Database
/// Roles": every database but `local` and `config`), as PostgreSQL's roles cover every table.
pub fn mongodb_role(role: &str) -> &'static str {
    match role {
        "readWrite" => "readWriteAnyDatabase",
        _ => "readAnyDatabase",
    }
}

/// Name of the Job that applies users generation `generation` of a MongoDB instance.
pub fn mongodb_job_name(mi: &ManagedInstance, generation: u64) -> String {
    super::job::name(mi, &format!("-users-{generation}"))
}

/// The Job that makes a MongoDB replica set's users what `mi` asks, for users generation `generation`:
/// mongosh, authenticated as the instance's admin user (`root`), creates each user the set lacks
/// (`db.createUser`), sets the password and role of each it has (`db.updateUser`: a rotation, or nothing
/// new), and drops every user the control plane made that is no longer asked (`db.dropUser`); the users it
/// made carry `customData: {cp: true}`, so the admin and the set's own users are never touched (MongoDB
/// manual, *db.createUser()*, *db.updateUser()*, *db.dropUser()*, and the `usersInfo` command, whose
/// `filter` matches the user documents and whose answer lists them in `users`). It
/// connects to the replica set, so the change is made on the primary and replicates (users live in
/// `admin.system.users`). Passwords come from the users' Secrets through the environment, never from the
/// Job's definition or a command line; the whole set is applied each time, so a rerun is harmless.
pub fn mongodb_job(mi: &ManagedInstance, generation: u64) -> Child {
    let users: Vec<Value> = mi
        .spec
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"name": u.name, "env": format!("USER_PASSWORD_{i}"),
                   "roles": [{"role": mongodb_role(&u.role), "db": "admin"}]})
        })
        .collect();
    let script = format!(
        "set -eu\n\
         mongosh '{uri}' --quiet --eval '\n\
         const admin = db.getSiblingDB(\"admin\");\n\
         admin.auth(\"{admin}\", process.env.ADMIN_PASSWORD);\n\
         const want = JSON.parse(process.env.USERS);\n\
         const have = admin.runCommand({{usersInfo: 1, filter: {{\"customData.cp\": true}}}}).users.map(u => u.user);\n\
         for (const u of want) {{\n\
           const pwd = process.env[u.env];\n\
           if (have.includes(u.name)) {{ admin.updateUser(u.name, {{pwd: pwd, roles: u.roles}}); }}\n\
           else {{ admin.createUser({{user: u.name, pwd: pwd, roles: u.roles, customData: {{cp: true}}}}); }}\n\
         }}\n\
         for (const name of have) {{ if (!want.some(u => u.name === name)) {{ admin.dropUser(name); }} }}\n\
         '\n",
        uri = super::replset::uri(mi, "admin", &[]),
        admin = super::admin_user("mongodb").unwrap_or("root"),
    );
    let mut env = vec![
        json!({"name": "ADMIN_PASSWORD", "valueFrom": {"secretKeyRef": {"name": super::credentials_name(mi), "key": "password"}}}),
        json!({"name": "USERS", "value": Value::Array(users).to_string()}),
    ];
    for (i, user) in mi.spec.users.iter().enumerate() {
        let secret = secret_name(&mi.name_any(), &user.name);
        env.push(json!({"name": format!("USER_PASSWORD_{i}"),
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}));
    }
    let name = mongodb_job_name(mi, generation);
    let mut object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(mi, &name),
        "spec": {
            // A few tries for a set that is briefly without a primary; a refusal stays a refusal.
            "backoffLimit": 3,
            "activeDeadlineSeconds": super::job::ROTATION_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": {super::job::CLIENT_OF_LABEL: mi.spec.instance_id}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "users",
                        "image": format!("mongo:{}", mi.spec.version),
                        "command": ["/bin/sh", "-c", script],
                        "env": env,
                    }],
                },
            },
        },
    });
    object["metadata"]["annotations"] = json!({USERS_GENERATION_ANNOTATION: generation.to_string()});
    Child { kind: ChildKind::Job, name, object }
}

/// Annotation of a users Job: the users generation it applies.
pub const USERS_GENERATION_ANNOTATION: &str = "cp.example.com/users-generation";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_distinct_per_user_and_valid_object_names() {
        assert_eq!(secret_name("orders", "etl_job"), "orders.user.etl-job");
        assert_ne!(secret_name("a", "x_credentials"), "a-user-x-credentials");
    }

    #[test]
    fn deleted_roles_are_kept_absent_and_sorted() {
        let mut desired = Child {
            kind: ChildKind::PostgresCluster,
            name: "pg".into(),
            object: json!({"spec": {"managed": {"roles": [{"name": "etl", "ensure": "present"}]}}}),
        };
        let current = json!({"spec": {"managed": {"roles": [
            {"name": "bi", "ensure": "present", "passwordSecret": {"name": "pg.user.bi"}},
            {"name": "etl", "ensure": "present"},
            {"name": "old", "ensure": "absent"}]}}});
        keep_absent_roles(&mut desired, &current);
        assert_eq!(
            desired.object["spec"]["managed"]["roles"],
            json!([{"name": "bi", "ensure": "absent"}, {"name": "etl", "ensure": "present"},
                   {"name": "old", "ensure": "absent"}])
        );
        assert_eq!(absent_roles(&desired.object), ["bi", "old"]);
    }
}

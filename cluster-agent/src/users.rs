//! An instance's per-application users in its cluster (issue 27): each user's password Secret, made here
//! with a random password and written again only to rotate it, and what the engine reports of each user.
//! The roles themselves are rendered with the workload (`render::users`); MongoDB's users are applied by
//! a Job (see [`mongodb`]).
//!
//! PostgreSQL: CloudNativePG's declarative role management. A user counts as applied once the Cluster's
//! status (v1.30.0 `api/v1/cluster_types.go`, `ManagedRoles`, written by the instance manager:
//! `internal/management/controller/roles/reconciler.go` and `runnable.go`) shows all of:
//! - `managedRolesStatus.byStatus.reconciled` lists it ("the role in DB matches the Spec");
//! - `managedRolesStatus.passwordStatus[<user>].resourceVersion` is the resource version of its Secret as
//!   it is now (the password in the Secret is the one the database has: a rotation is applied only then);
//! - the Cluster's spec has it as a present role.
//!
//! It fails with the reasons `managedRolesStatus.cannotReconcile[<user>]` gives ("Failures may originate
//! in PostgreSQL (e.g. dropping a role that owns objects) or in Kubernetes (e.g. the referenced password
//! Secret cannot be fetched)"). A deleted user (`ensure: absent`) is revoked once `byStatus.reconciled`
//! lists it: CloudNativePG lists an absent role as reconciled once the database has no such role
//! (`roles.go`, `evaluateNextRoleActions`). CloudNativePG reports no generation for this status, so a
//! status written before the Cluster's spec changed can be read as the new one's; for a new user or a
//! rotation the password's resource version rules that out, for a deletion it does not (a known gap).
//!
//! The Secrets carry the instance's labels, so a deprovisioned instance's go with its other objects
//! (`controller::cleanup`), and a deleted user's is pruned at once: an absent role needs no password.
//! Passwords are never logged, put in an event, or reported.

use domain::observed::ObservedUser;
use kube::{
    ResourceExt as _,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use rand::Rng as _;
use serde_json::{Value, json};

use crate::{
    Result,
    controller::Context,
    crd::ManagedInstance,
    render::{
        ChildKind, apply_params, user_tokens,
        users::{
            PASSWORD_GENERATION_ANNOTATION, USER_LABEL, absent_roles, mongodb_job, mongodb_job_name, secret,
            secret_name,
        },
    },
};

/// The services whose users the agent makes (the domain refuses users of the others:
/// `domain::instance::users::USER_SERVICES`).
pub(crate) fn makes_users_of(service: &str) -> bool {
    service == "postgresql" || service == "mongodb" || user_tokens::holds_token(service)
}

/// Where an instance's users stand after a reconcile.
#[derive(Debug, Default)]
pub(crate) struct Users {
    /// the users generation the cluster has applied
    pub applied: u64,
    /// why a user cannot be applied, if the engine says so
    pub failure: Option<String>,
    /// each user as the engine reports it; `None` for an instance that never had users
    pub observed: Option<Vec<ObservedUser>>,
    /// the Job applying the users (MongoDB, InfluxDB), kept by the pruning while it runs
    pub job: Option<String>,
    /// Secrets of deleted users kept by the pruning until their Job revoked them (InfluxDB: the Job
    /// reads each one's authorization id from it)
    pub revoking: Vec<String>,
    /// earlier users Jobs still running (InfluxDB, Grafana), kept by the pruning until they end: the next
    /// one waits for them, so two never hand over or revoke the same user's token at once
    pub running: Vec<String>,
}

/// A new random password: letters and digits, 32 of them, as the instance's own.
fn new_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

pub(crate) fn password_generation(secret: &Value) -> u64 {
    secret["metadata"]["annotations"][PASSWORD_GENERATION_ANNOTATION]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// A Secret `data` value: base64, as `ByteString` serializes.
fn encode(text: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap_or_default()
}

/// Makes the Secret of each user that has none, and gives a user whose rotation was asked a new password.
/// Runs before the roles are applied, so the engine never looks for a Secret that is not there yet.
pub(crate) async fn ensure_secrets(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<()> {
    if !makes_users_of(&mi.spec.service) {
        return Ok(());
    }
    let namespace = mi.namespace().unwrap_or_default();
    for user in &mi.spec.users {
        let name = secret_name(&mi.name_any(), &user.name);
        let tokens = user_tokens::holds_token(&mi.spec.service);
        let written = match ctx.current(ChildKind::Secret, &namespace, &name) {
            None => {
                let mut made = secret(mi, user, &new_password()).object;
                if tokens {
                    // The service makes the token: the users Job writes it here (`render::user_tokens`),
                    // with the generation it answers; none yet.
                    if let Some(data) = made["stringData"].as_object_mut() {
                        data.remove("password");
                    }
                    made["metadata"]["annotations"][PASSWORD_GENERATION_ANNOTATION] = json!("0");
                }
                let object: DynamicObject = serde_json::from_value(made)?;
                match ctx.api(ChildKind::Secret, &namespace).create(&PostParams::default(), &object).await {
                    Ok(created) => created,
                    // Made meanwhile (by an earlier reconcile whose answer was lost): fine.
                    Err(kube::Error::Api(e)) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(current) if !tokens && password_generation(&current) < user.generation => {
                // A rotation: the new password replaces the old in the Secret; the engine applies it on the
                // Secret's new resource version, and the old one works until then.
                let patch = json!({
                    "metadata": {"annotations": {PASSWORD_GENERATION_ANNOTATION: user.generation.to_string()}},
                    "data": {"password": encode(&new_password())},
                });
                ctx.api(ChildKind::Secret, &namespace)
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?
            }
            Some(_) => continue,
        };
        ctx.remember(ChildKind::Secret, &namespace, &name, Some(serde_json::to_value(&written)?));
        *writes += 1;
    }
    Ok(())
}

/// Whether the Secret called `name` is one of the instance's users' (the pruning keeps it).
pub(crate) fn wanted_secret(mi: &ManagedInstance, name: &str) -> bool {
    mi.spec.users.iter().any(|u| secret_name(&mi.name_any(), &u.name) == name)
}

/// Takes the next step for the instance's users (MongoDB: their Job) and reports what the engine says
/// of them. Runs after the instance's objects are applied.
pub(crate) async fn reconcile(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<Users> {
    if mi.spec.service == "mongodb" {
        mongodb(mi, ctx, writes).await
    } else if user_tokens::holds_token(&mi.spec.service) {
        crate::user_tokens::reconcile(mi, ctx, writes).await
    } else {
        Ok(observe(mi, ctx))
    }
}

/// The Secrets of users the instance no longer has (their labels name a user it lacks), each with that
/// user's name.
pub(crate) fn deleted_users_secrets(mi: &ManagedInstance, ctx: &Context) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = ctx
        .owned(ChildKind::Secret, &mi.spec.instance_id)
        .into_iter()
        .filter_map(|s| {
            let user = s.labels().get(USER_LABEL)?.clone();
            (!mi.spec.users.iter().any(|w| w.name == user)).then(|| (s.name_any(), user))
        })
        .collect();
    found.sort();
    found
}

/// Each user of `mi`, at its generation when `applied`, with `reason` otherwise.
pub(crate) fn every_user(
    mi: &ManagedInstance,
    applied: bool,
    reason: Option<&str>,
) -> Option<Vec<ObservedUser>> {
    Some(
        mi.spec
            .users
            .iter()
            .map(|u| ObservedUser {
                name: u.name.clone(),
                generation: if applied { u.generation } else { 0 },
                reason: reason.map(str::to_owned),
            })
            .collect(),
    )
}

/// MongoDB's users, applied by a Job per users generation (`render::users::mongodb_job`), level-triggered
/// as the credentials rotation is: the Job is made once the set serves and every user's Secret is there,
/// and its outcome is the users' (its failure the operation's, `UsersNotApplied: …`).
async fn mongodb(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<Users> {
    let wanted = mi.spec.aspect_generations().users;
    let reported = mi.status.as_ref().and_then(|s| s.applied).map_or(0, |a| a.users);
    if wanted == 0 && mi.spec.users.is_empty() {
        return Ok(Users { applied: wanted, ..Users::default() });
    }
    if reported >= wanted {
        return Ok(Users { applied: wanted, observed: every_user(mi, true, None), ..Users::default() });
    }
    let namespace = mi.namespace().unwrap_or_default();
    let job_name = mongodb_job_name(mi, wanted);
    let waiting = Users {
        applied: reported,
        observed: every_user(mi, false, None),
        job: Some(job_name.clone()),
        ..Users::default()
    };
    let secrets_ready = mi.spec.users.iter().all(|u| {
        ctx.current(ChildKind::Secret, &namespace, &secret_name(&mi.name_any(), &u.name))
            .is_some_and(|s| password_generation(&s) >= u.generation)
    });
    let Some(job) = ctx.current(ChildKind::Job, &namespace, &job_name) else {
        // The Job talks to the set: made once it serves.
        let serving = mi.status.as_ref().is_some_and(|s| s.phase == "Ready");
        if serving && secrets_ready {
            apply_job(ctx, &namespace, &mongodb_job(mi, wanted)).await?;
            *writes += 1;
        }
        return Ok(waiting);
    };
    match crate::render::job::outcome(&job) {
        None => Ok(waiting),
        Some(Err(why)) => Ok(job_failed(mi, &job_name, &why, waiting)),
        Some(Ok(())) => {
            Ok(Users { applied: wanted, observed: every_user(mi, true, None), ..Users::default() })
        }
    }
}

/// Applies a users Job (MongoDB's, or a token service's) and remembers what the API server made of it.
pub(crate) async fn apply_job(ctx: &Context, namespace: &str, job: &crate::render::Child) -> Result<()> {
    let written = ctx
        .api(ChildKind::Job, namespace)
        .patch(&job.name, &apply_params(), &Patch::Apply(&job.object))
        .await?;
    ctx.remember(ChildKind::Job, namespace, &job.name, Some(serde_json::to_value(&written)?));
    Ok(())
}

/// The users as a failed users Job leaves them: none applied, each with the Job's reason.
pub(crate) fn job_failed(mi: &ManagedInstance, job_name: &str, why: &str, waiting: Users) -> Users {
    tracing::warn!(job = %job_name, reason = %why, "applying the users failed");
    Users {
        failure: Some(format!("UsersNotApplied: {why}")),
        observed: every_user(mi, false, Some(why)),
        ..waiting
    }
}

/// What the engine reports of the instance's users.
fn observe(mi: &ManagedInstance, ctx: &Context) -> Users {
    let wanted = mi.spec.aspect_generations().users;
    let before = mi.status.as_ref().and_then(|s| s.applied).map_or(0, |a| a.users);
    if !makes_users_of(&mi.spec.service) || (wanted == 0 && mi.spec.users.is_empty()) {
        return Users { applied: wanted, ..Users::default() };
    }
    let namespace = mi.namespace().unwrap_or_default();
    let cluster = ctx.current(ChildKind::PostgresCluster, &namespace, &mi.name_any()).unwrap_or(Value::Null);
    let secrets = |user: &str| ctx.current(ChildKind::Secret, &namespace, &secret_name(&mi.name_any(), user));
    let report = postgres_users(mi, &cluster, secrets);
    Users { applied: if report.all_applied { wanted } else { before }, ..report.users }
}

struct Report {
    users: Users,
    all_applied: bool,
}

/// Reads CloudNativePG's `managedRolesStatus` of `cluster` for the users of `mi`, whose Secrets `secret`
/// finds (see the module's documentation).
fn postgres_users(mi: &ManagedInstance, cluster: &Value, secret: impl Fn(&str) -> Option<Value>) -> Report {
    let status = &cluster["status"]["managedRolesStatus"];
    let reconciled = |name: &str| {
        status["byStatus"]["reconciled"].as_array().into_iter().flatten().any(|r| r.as_str() == Some(name))
    };
    let cannot = |name: &str| {
        let reasons: Vec<&str> = status["cannotReconcile"][name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    };
    let present = |name: &str| {
        cluster["spec"]["managed"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == name && r["ensure"] != "absent")
    };
    let mut all_applied = true;
    let mut failure = None;
    let mut observed = Vec::new();
    for user in &mi.spec.users {
        let secret = secret(&user.name);
        let version =
            secret.as_ref().and_then(|s| s["metadata"]["resourceVersion"].as_str().map(str::to_owned));
        let password_seen = version.is_some()
            && status["passwordStatus"][user.name.as_str()]["resourceVersion"].as_str() == version.as_deref();
        let rotated = secret.as_ref().is_some_and(|s| password_generation(s) >= user.generation);
        let applied = rotated && password_seen && present(&user.name) && reconciled(&user.name);
        let reason = cannot(&user.name);
        if let Some(reason) = &reason {
            failure = failure.or_else(|| Some(format!("UserNotApplied: {}: {reason}", user.name)));
        }
        all_applied &= applied;
        observed.push(ObservedUser {
            name: user.name.clone(),
            generation: if applied { user.generation } else { 0 },
            reason,
        });
    }
    for name in absent_roles(cluster) {
        if let Some(reason) = cannot(&name) {
            failure = failure.or_else(|| Some(format!("UserNotRevoked: {name}: {reason}")));
        }
        all_applied &= reconciled(&name) && cannot(&name).is_none();
    }
    Report {
        users: Users {
            applied: 0,
            failure,
            observed: Some(observed),
            job: None,
            revoking: vec![],
            running: vec![],
        },
        all_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ManagedInstanceSpec, UserTarget};

    fn instance(users: &[(&str, u64)]) -> ManagedInstance {
        let mut mi = ManagedInstance::new(
            "pg",
            ManagedInstanceSpec {
                instance_id: "00000000-0000-0000-0000-000000000001".into(),
                project: "acme".into(),
                service: "postgresql".into(),
                version: "16".into(),
                plan: "standard".into(),
                cpu_millis: 500,
                memory_mib: 1024,
                replicas: 1,
                storage_gib: 10,
                config: Default::default(),
                generation: 5,
                aspects: None,
                acl: vec![],
                restore: None,
                archive_server: None,
                users: users
                    .iter()
                    .map(|(n, g)| UserTarget { name: (*n).into(), role: "readonly".into(), generation: *g })
                    .collect(),
            },
        );
        mi.metadata.namespace = Some("cp-acme".into());
        mi
    }

    fn secret(version: &str, generation: u64) -> Value {
        json!({"metadata": {"resourceVersion": version,
            "annotations": {PASSWORD_GENERATION_ANNOTATION: generation.to_string()}}})
    }

    fn cluster(roles: Value, status: Value) -> Value {
        json!({"spec": {"managed": {"roles": roles}}, "status": {"managedRolesStatus": status}})
    }

    #[test]
    fn a_user_is_applied_once_reconciled_with_the_secret_s_current_password() {
        let mi = instance(&[("bi", 3)]);
        let roles = json!([{"name": "bi", "ensure": "present"}]);
        // CloudNativePG v1.30's form: byStatus, passwordStatus with the Secret's resource version.
        let seen = cluster(
            roles.clone(),
            json!({"byStatus": {"reconciled": ["bi"], "reserved": ["postgres", "streaming_replica"]},
                   "passwordStatus": {"bi": {"transactionID": 742, "resourceVersion": "17"}}}),
        );
        let report = postgres_users(&mi, &seen, |_| Some(secret("17", 3)));
        assert!(report.all_applied);
        assert_eq!(report.users.observed.unwrap()[0].generation, 3);
        // A rotation written since (new resource version, newer generation) is not applied yet.
        let mi = instance(&[("bi", 6)]);
        let report = postgres_users(&mi, &seen, |_| Some(secret("21", 6)));
        assert!(!report.all_applied);
        assert_eq!(report.users.observed.unwrap()[0].generation, 0);
        // Not listed yet: pending.
        let pending = cluster(roles, json!({"byStatus": {"pending-reconciliation": ["bi"]}}));
        assert!(!postgres_users(&mi, &pending, |_| Some(secret("21", 6))).all_applied);
    }

    #[test]
    fn cannot_reconcile_is_the_user_s_failure_and_an_absent_role_is_revoked_once_reconciled() {
        let mi = instance(&[]);
        let failing = cluster(
            json!([{"name": "bi", "ensure": "absent"}]),
            json!({"byStatus": {"pending-reconciliation": ["bi"]},
                   "cannotReconcile": {"bi": ["could not perform DELETE on role bi: role \"bi\" cannot be dropped because some objects depend on it"]}}),
        );
        let report = postgres_users(&mi, &failing, |_| None);
        assert!(!report.all_applied);
        assert!(report.users.failure.unwrap().starts_with("UserNotRevoked: bi: could not perform DELETE"));
        let gone =
            cluster(json!([{"name": "bi", "ensure": "absent"}]), json!({"byStatus": {"reconciled": ["bi"]}}));
        assert!(postgres_users(&mi, &gone, |_| None).all_applied);
    }
}

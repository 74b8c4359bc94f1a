//! Rotating an instance's password, level-triggered: the ManagedInstance says which credentials generation
//! is wanted, the Secret's annotation which one its password answers. Each reconcile takes the next step
//! and records it in the cluster, so a crash between steps resumes where it stopped:
//!
//! 1. a new password is put beside the current one (`next-password`);
//! 2. a Job makes the running service accept it (it tries the new password first, so running it again
//!    after the change is harmless);
//! 3. once the Job completed, the new password replaces the old one and the annotation records the
//!    generation: the rotation is applied.
//!
//! PostgreSQL's password is CloudNativePG's: the agent writes the new one into the operator's application
//! Secret, the operator applies it to the role (cloudnative-pg v1.30
//! `internal/management/controller/instance_controller.go`, `refreshCredentialsFromSecret` →
//! `reconcileUser`, on each new resource version of the Secret), and the rotation counts as applied once
//! the Cluster reports that version of the Secret.
//!
//! Passwords never leave the cluster: they go from a random generator into a Secret, nothing logs them.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt as _,
    api::{Patch, PatchParams},
};
use rand::Rng as _;
use serde_json::{Value, json};

use super::Context;
use crate::{
    Result,
    crd::ManagedInstance,
    render::{
        self, ChildKind, apply_params,
        rotation::{self, GENERATION_ANNOTATION, NEXT_PASSWORD_KEY},
    },
};

/// Where an instance's rotation stands after a reconcile.
#[derive(Debug, Default)]
pub(super) struct Rotation {
    /// the credentials generation the service runs with
    pub applied: u64,
    /// the Job of the rotation in progress (kept by the pruning)
    pub job: Option<String>,
    /// why the rotation failed, if it did
    pub failure: Option<String>,
}

/// A new random password: letters and digits, 32 of them, as the first one.
pub(super) fn new_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

fn generation_of(annotations: &std::collections::BTreeMap<String, String>) -> u64 {
    annotations.get(GENERATION_ANNOTATION).and_then(|g| g.parse().ok()).unwrap_or(0)
}

/// A Secret `data` value: base64, as `ByteString` serializes.
fn encode(text: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap_or_default()
}

fn key(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Takes the next step of the rotation `mi` asks for, if any.
pub(super) async fn rotate(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<Rotation> {
    let wanted = mi.spec.aspect_generations().credentials;
    let reported = mi.status.as_ref().and_then(|s| s.applied).map_or(0, |a| a.credentials);
    // Nothing asked, or already done and reported: no request at all.
    if wanted == 0 || reported >= wanted {
        return Ok(Rotation { applied: wanted, ..Rotation::default() });
    }
    if mi.spec.service == "postgresql" {
        rotate_postgres(mi, ctx, wanted, reported, writes).await
    } else {
        rotate_with_job(mi, ctx, wanted, reported, writes).await
    }
}

async fn rotate_with_job(
    mi: &ManagedInstance,
    ctx: &Context,
    wanted: u64,
    reported: u64,
    writes: &mut u32,
) -> Result<Rotation> {
    let namespace = mi.namespace().unwrap_or_default();
    let secret_name = render::credentials_name(mi);
    let waiting = Rotation { applied: reported, ..Rotation::default() };
    let Some(current) = ctx.current(ChildKind::Secret, &namespace, &secret_name) else { return Ok(waiting) };
    let secret: Secret = serde_json::from_value(current)?;
    if generation_of(secret.annotations()) >= wanted {
        return Ok(Rotation { applied: wanted, ..Rotation::default() });
    }
    let secrets = ctx.api(ChildKind::Secret, &namespace);
    let Some(next) = key(&secret, NEXT_PASSWORD_KEY) else {
        let patch = json!({"data": {NEXT_PASSWORD_KEY: encode(&new_password())}});
        let written = secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        ctx.remember(ChildKind::Secret, &namespace, &secret_name, Some(serde_json::to_value(&written)?));
        *writes += 1;
        // The Job is made once the Secret it reads holds the new password (the next reconcile, which
        // this write triggers).
        return Ok(waiting);
    };
    // The Job talks to the service: wait until it serves.
    let serving = mi.status.as_ref().is_some_and(|s| s.phase == "Ready");
    let job_name = rotation::job_name(mi, wanted);
    let Some(job) = ctx.current(ChildKind::Job, &namespace, &job_name) else {
        if serving && let Some(job) = rotation::job(mi, wanted) {
            let written = ctx
                .api(ChildKind::Job, &namespace)
                .patch(&job.name, &apply_params(), &Patch::Apply(&job.object))
                .await?;
            ctx.remember(ChildKind::Job, &namespace, &job.name, Some(serde_json::to_value(&written)?));
            *writes += 1;
        }
        return Ok(Rotation { job: Some(job_name), ..waiting });
    };
    match render::job::outcome(&job) {
        None => Ok(Rotation { job: Some(job_name), ..waiting }),
        Some(Err(why)) => {
            let reason = format!("CredentialsRotationFailed: {why}");
            tracing::warn!(job = %job_name, %reason, "credentials rotation failed");
            Ok(Rotation { job: Some(job_name), failure: Some(reason), ..waiting })
        }
        Some(Ok(())) => {
            // The service takes the new password now: make it the one clients read.
            let patch = json!({
                "metadata": {"annotations": {GENERATION_ANNOTATION: wanted.to_string()}},
                "data": {"password": encode(&next), NEXT_PASSWORD_KEY: Value::Null},
            });
            let written = secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            ctx.remember(ChildKind::Secret, &namespace, &secret_name, Some(serde_json::to_value(&written)?));
            *writes += 1;
            Ok(Rotation { applied: wanted, ..Rotation::default() })
        }
    }
}

async fn rotate_postgres(
    mi: &ManagedInstance,
    ctx: &Context,
    wanted: u64,
    reported: u64,
    writes: &mut u32,
) -> Result<Rotation> {
    let namespace = mi.namespace().unwrap_or_default();
    let waiting = Rotation { applied: reported, ..Rotation::default() };
    let Some(cluster) = ctx.current(ChildKind::PostgresCluster, &namespace, &mi.name_any()) else {
        return Ok(waiting);
    };
    // CloudNativePG's Secret is not labelled as ours, so it is not in a watch cache: read while rotating.
    let secrets: Api<Secret> = Api::namespaced(ctx.config.client.clone(), &namespace);
    let name = rotation::postgres_app_secret_name(mi);
    let Some(mut secret) = secrets.get_opt(&name).await? else { return Ok(waiting) };
    if !owned_by(&secret, &cluster) {
        return Ok(waiting);
    }
    if generation_of(secret.annotations()) < wanted {
        let username = key(&secret, "username").unwrap_or_else(|| "app".into());
        let dbname = key(&secret, "dbname").unwrap_or_else(|| "app".into());
        let host = key(&secret, "host").unwrap_or_else(|| format!("{}-rw", mi.name_any()));
        let data = rotation::postgres_secret_data(&username, &dbname, &host, &namespace, &new_password());
        let data: serde_json::Map<String, Value> = data
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), encode(v.as_str().unwrap_or_default())))
            .collect();
        let patch =
            json!({"metadata": {"annotations": {GENERATION_ANNOTATION: wanted.to_string()}}, "data": data});
        secret = secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        *writes += 1;
    }
    let seen = &cluster["status"]["secretsResourceVersion"]["applicationSecretVersion"];
    let applied = seen.as_str().is_some() && seen.as_str() == secret.resource_version().as_deref();
    Ok(Rotation { applied: if applied { wanted } else { reported }, ..Rotation::default() })
}

/// Whether CloudNativePG made `secret` for this instance's Cluster (it owns it: `SetInheritedDataAndOwnership`).
fn owned_by(secret: &Secret, cluster: &Value) -> bool {
    let uid = cluster["metadata"]["uid"].as_str();
    secret.owner_references().iter().any(|o| o.kind == "Cluster" && Some(o.uid.as_str()) == uid)
}

//! Converging one instance: apply what it renders to, create its credentials once, prune what it no
//! longer needs, grow its claims, record drift, and report what the cluster shows.

use std::sync::Arc;

use domain::observed::{DriftedField, ObservedEvent};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{CHILD_KINDS, Context, about, lock, observe, restore, rotation};
use crate::{
    Result,
    crd::ManagedInstance,
    publish::publish,
    render::{self, ChildKind, apply_params, has_owner_references, is_applied},
};

/// How soon a refused volume expansion is tried again.
const EXPANSION_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Makes the cluster hold exactly the objects `mi` renders to, and reports what it observes.
pub(super) async fn apply(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    let namespace = mi.namespace().unwrap_or_default();
    let mut writes = 0u32;
    let mut desired = render::render(&mi, ctx.config.backup_store.as_ref());
    // Of the objects as rendered, before the pass adapts them to what the cluster holds.
    let rendered = render::digest::digests(&desired);
    let mut healed = Vec::new();
    let mut drifted = Vec::new();
    let instance_id = mi.spec.instance_id.clone();
    let instance_id = instance_id.as_str();
    // Keyed by the object's uid: a ManagedInstance deleted and recreated starts without a status.
    let uid = mi.uid().unwrap_or_default();
    let last = lock(&ctx.statuses).get(&uid).cloned().or_else(|| mi.status.clone());
    let mi = if last != mi.status {
        // Observe against the status we last wrote, not the (older) one in the watch cache.
        let mut newer = (*mi).clone();
        newer.status = last.clone();
        Arc::new(newer)
    } else {
        mi
    };
    let converged = last.as_ref().and_then(|s| s.observed_generation) == Some(mi.spec.generation);
    // An ObjectStore, a backup's Job and a restore read the instance's own store keys from its store
    // Secret: it goes first, asked of the control plane when missing or granted for another restore
    // source (`crate::store_access`).
    if let Some(store) = &ctx.config.backup_store
        && (mi.spec.restore.is_some() || desired.iter().any(|c| c.kind == ChildKind::ObjectStore))
    {
        let name = render::backup::store_secret_name(&mi);
        let current = ctx.current(ChildKind::Secret, &namespace, &name);
        if let Some(written) = crate::store_access::ensure(&ctx.config, store, &mi, current.as_ref()).await? {
            writes += 1;
            ctx.remember(ChildKind::Secret, &namespace, &name, Some(written));
        }
    }
    // Users' password Secrets before the roles that name them.
    crate::users::ensure_secrets(&mi, ctx, &mut writes).await?;
    // A MongoDB replica set's members leave its configuration before their pods go.
    let members_removed = desired.iter().filter(|c| render::replset::is_replset_job(c)).all(|job| {
        ctx.current(ChildKind::Job, &namespace, &job.name)
            .is_some_and(|j| render::job::outcome(&j) == Some(Ok(())))
    });
    // PostgreSQL's configuration check waits for changes, not for a bootstrap (a recovery may take hours).
    let cluster_ready = desired.iter().filter(|c| c.kind == ChildKind::PostgresCluster).any(|c| {
        ctx.current(c.kind, &namespace, &c.name).is_some_and(|c| render::pg_settings::cluster_ready(&c))
    });
    for child in &mut desired {
        let current = ctx.current(child.kind, &namespace, &child.name);
        if current.is_none() && render::pg_settings::is_verification_job(child) && !cluster_ready {
            continue;
        }
        if let Some(current) = &current {
            render::keep_claim_templates(child, current);
            render::replset::hold_scale_down(child, current, members_removed);
            render::users::keep_absent_roles(child, current);
        }
        let applied = current.as_ref().is_some_and(|c| is_applied(&child.object, c));
        // An owner reference left by an older agent goes with the next apply (this manager owns it).
        if applied && !current.as_ref().is_some_and(has_owner_references) {
            continue;
        }
        let written = ctx
            .api(child.kind, &namespace)
            .patch(&child.name, &apply_params(), &Patch::Apply(&child.object))
            .await?;
        writes += 1;
        ctx.remember(child.kind, &namespace, &child.name, Some(serde_json::to_value(&written)?));
        // Converged before, and now missing or changed: someone else edited or deleted it. What was
        // changed is reported, except a Secret's values.
        if converged && !applied {
            let object = format!("{}/{}", child.kind.kind(), child.name);
            if let Some((path, desired, found)) =
                current.as_ref().and_then(|c| render::first_difference(&child.object, c))
            {
                let (desired, found) = if child.kind == ChildKind::Secret {
                    (json!("(not reported)"), json!("(not reported)"))
                } else {
                    (desired, found)
                };
                drifted.push(DriftedField { object: object.clone(), path, desired, found });
            }
            healed.push(object);
        }
    }
    for secret in render::secrets_made_once(&mi, "", "") {
        if ctx.current(ChildKind::Secret, &namespace, &secret.name).is_some() {
            continue;
        }
        let fresh = render::secrets_made_once(&mi, &rotation::new_password(), &render::replset::new_key());
        let secret = fresh.into_iter().find(|s| s.name == secret.name).expect("same instance");
        let object: DynamicObject = serde_json::from_value(secret.object)?;
        match ctx.api(ChildKind::Secret, &namespace).create(&PostParams::default(), &object).await {
            Ok(created) => ctx.remember(
                ChildKind::Secret,
                &namespace,
                &secret.name,
                Some(serde_json::to_value(&created)?),
            ),
            // Made meanwhile (by an earlier reconcile whose answer was lost): fine. A 409 `Conflict` is
            // not that, and is retried like any other failure.
            Err(kube::Error::Api(e)) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e.into()),
        }
        writes += 1;
    }
    let rotation = rotation::rotate(&mi, ctx, &mut writes).await?;
    let restore = restore::restore(&mi, ctx, &mut writes).await?;
    let users = crate::users::reconcile(&mi, ctx, &mut writes).await?;
    // Prune what the instance no longer needs (for example after a change of service layout, or a
    // rotation's Job once the rotation is done).
    for kind in CHILD_KINDS {
        for object in ctx.owned(kind, instance_id) {
            let name = object.name_any();
            let wanted = desired.iter().any(|c| c.kind == kind && c.name == name)
                || (kind == ChildKind::Secret
                    && (render::secrets_made_once(&mi, "", "").iter().any(|s| s.name == name)
                        || name == render::backup::store_secret_name(&mi)
                        || crate::users::wanted_secret(&mi, &name)
                        || users.revoking.contains(&name)))
                || (kind == ChildKind::Job
                    && ([rotation.job.as_deref(), restore.job.as_deref(), users.job.as_deref()]
                        .contains(&Some(name.as_str()))
                        || users.running.contains(&name)));
            if !wanted {
                delete(ctx, kind, &namespace, &name).await?;
                writes += 1;
            }
        }
    }
    let storage_failure = expand_claims(&mi, ctx, &namespace, &mut writes).await?;
    if !healed.is_empty() {
        tracing::warn!(objects = ?healed, fields = ?drifted, "drift healed");
        ctx.config.metrics.drift_healed.inc();
        let event = ObservedEvent::DriftHealed {
            instance_id: super::instance_uuid(&mi),
            objects: healed,
            fields: drifted,
        };
        publish(&ctx.config, &ctx.jetstream, about(&mi), event).await?;
    }
    // A refused expansion is fixed outside our view (an admin allows expansion on the StorageClass), so
    // nothing will trigger the retry: poll, slowly.
    let next =
        if storage_failure.is_some() { Action::requeue(EXPANSION_RETRY) } else { Action::await_change() };
    let observed =
        observe::observe(&mi, ctx, &desired, rendered, storage_failure, &rotation, &restore, &users);
    let status = observe::status_of(&mi, &observed);
    if last.as_ref().is_none_or(|s| !observe::same_status(s, &status)) {
        publish(&ctx.config, &ctx.jetstream, about(&mi), ObservedEvent::InstanceObserved(Box::new(observed)))
            .await?;
        let api: Api<ManagedInstance> = Api::namespaced(ctx.config.client.clone(), &namespace);
        let patch =
            json!({"apiVersion": "cp.example.com/v1alpha1", "kind": "ManagedInstance", "status": status});
        api.patch_status(&mi.name_any(), &apply_params(), &Patch::Apply(&patch)).await?;
        lock(&ctx.statuses).insert(uid, status);
        writes += 1;
    }
    ctx.config.metrics.requests_per_reconcile.observe(f64::from(writes));
    Ok(next)
}

/// Grows the instance's volume claims to the size it wants (one merge patch per claim; the cluster's
/// volume expander does the rest). Returns why the cluster refused, if it did: a StorageClass without
/// `allowVolumeExpansion` answers 403/422, which no retry fixes, so it is reported, not retried.
async fn expand_claims(
    mi: &ManagedInstance,
    ctx: &Context,
    namespace: &str,
    writes: &mut u32,
) -> Result<Option<String>> {
    if !render::expands_claims(mi) {
        return Ok(None);
    }
    let size = render::claim_size(mi);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.config.client.clone(), namespace);
    for claim in ctx.claims(namespace, &mi.spec.instance_id) {
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str())
            .unwrap_or_default();
        let uid = claim.uid().unwrap_or_default();
        let already = lock(&ctx.requested).get(&uid) == Some(&size);
        // Only a bound claim may change its requested size: Kubernetes v1.36.1
        // `pkg/apis/core/validation/validation.go` (ValidatePersistentVolumeClaimUpdate) refuses any other
        // spec change with 422 "spec is immutable after creation except resources.requests and
        // volumeAttributesClassName for bound claims". A claim the StatefulSet just created from its
        // (smaller, immutable) template is grown once it binds; the claims watch brings that change here.
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if already || !bound || !render::claim_needs_expansion(mi, requested) {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                *writes += 1;
                lock(&ctx.requested).insert(uid, size.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                tracing::warn!(claim = %claim.name_any(), error = %e.message, "volume expansion refused");
                return Ok(Some("VolumeExpansionFailed".into()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

pub(super) async fn delete(ctx: &Context, kind: ChildKind, namespace: &str, name: &str) -> Result<()> {
    match ctx.api(kind, namespace).delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.remember(kind, namespace, name, None);
    Ok(())
}

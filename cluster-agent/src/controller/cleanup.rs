//! A ManagedInstance being deleted. Only the control plane's decision destroys data: a deprovisioned
//! instance's objects, claims and credentials are deleted; a mirror deleted by anyone else while its
//! instance is active is let go with its data untouched, and the mirror puts it back.

use std::sync::Arc;

use domain::observed::ObservedEvent;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams},
    runtime::controller::Action,
};

use super::{CHILD_KINDS, Context, about, converge::delete, instance_uuid, lock};
use crate::{
    Error, Result,
    crd::{MANAGER, ManagedInstance},
    mirror::DesiredLifecycle,
    publish::publish,
    render::has_owner_references,
};

pub(super) async fn cleanup(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    match ctx.desired.lifecycle(instance_uuid(&mi)) {
        // After a restart the mirror first rebuilds what the control plane wants; until then nobody
        // knows whether this deletion is a deprovisioning.
        DesiredLifecycle::NotYetKnown => Err(Error::Waiting("desired state not rebuilt yet".into())),
        DesiredLifecycle::Active => release(mi, ctx).await,
        DesiredLifecycle::Deprovisioning | DesiredLifecycle::Unknown => remove(mi, ctx).await,
    }
}

/// The mirror of an active instance was deleted by hand (or by a tool). Nothing of the instance's is
/// deleted; any owner reference an older agent left is removed first so the garbage collector has
/// nothing to collect, then the finalizer goes and the mirror re-creates the ManagedInstance.
async fn release(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    let namespace = mi.namespace().unwrap_or_default();
    tracing::warn!(instance = %mi.name_any(), "ManagedInstance of an active instance deleted; its data is kept and the mirror restores it");
    for kind in CHILD_KINDS {
        for object in ctx.owned(kind, &mi.spec.instance_id) {
            let value = serde_json::to_value(object.as_ref())?;
            if has_owner_references(&value) {
                let orphan = serde_json::json!({"metadata": {"ownerReferences": null}});
                let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
                ctx.api(kind, &namespace).patch(&object.name_any(), &params, &Patch::Merge(&orphan)).await?;
            }
        }
    }
    lock(&ctx.statuses).remove(&mi.uid().unwrap_or_default());
    ctx.config.metrics.mirrors_restored.inc();
    Ok(Action::await_change())
}

/// Deletes everything the instance owns; reports it gone once the watches show nothing left.
async fn remove(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    let namespace = mi.namespace().unwrap_or_default();
    let mut remaining = 0;
    for kind in CHILD_KINDS {
        for object in ctx.owned(kind, &mi.spec.instance_id) {
            remaining += 1;
            let uid = object.uid().unwrap_or_default();
            if object.metadata.deletion_timestamp.is_none() && !asked_to_delete(ctx, &mi, &uid) {
                delete(ctx, kind, &namespace, &object.name_any()).await?;
                lock(&ctx.deleting).entry(mi.spec.instance_id.clone()).or_default().insert(uid);
            }
        }
    }
    // The data volumes go last: the StatefulSet retains them (`whenDeleted: Retain`, see `render`), and
    // once the set is gone nothing would recreate them.
    let set_gone = remaining == 0;
    for claim in ctx.claims(&namespace, &mi.spec.instance_id) {
        remaining += 1;
        let uid = claim.uid().unwrap_or_default();
        lock(&ctx.requested).remove(&uid);
        if set_gone && claim.metadata.deletion_timestamp.is_none() && !asked_to_delete(ctx, &mi, &uid) {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.config.client.clone(), &namespace);
            match api.delete(&claim.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            lock(&ctx.deleting).entry(mi.spec.instance_id.clone()).or_default().insert(uid);
        }
    }
    if remaining > 0 {
        // Not Ok: the finalizer helper would remove the finalizer. The deletions' watch events trigger the
        // next cleanup; the error policy's requeue only guards a lost event.
        return Err(Error::Waiting(format!("{remaining} objects still present")));
    }
    // The users Job's account (InfluxDB), which no watch of the agent's covers: deleted by name.
    crate::user_tokens::remove_account(&mi, ctx).await?;
    publish(
        &ctx.config,
        &ctx.jetstream,
        about(&mi),
        ObservedEvent::InstanceRemoved { instance_id: instance_uuid(&mi) },
    )
    .await?;
    lock(&ctx.statuses).remove(&mi.uid().unwrap_or_default());
    lock(&ctx.deleting).remove(&mi.spec.instance_id);
    Ok(Action::await_change())
}

/// Whether this cleanup already asked to delete the object: the watch cache may still show it.
fn asked_to_delete(ctx: &Context, mi: &ManagedInstance, uid: &str) -> bool {
    lock(&ctx.deleting).get(&mi.spec.instance_id).is_some_and(|uids| uids.contains(uid))
}

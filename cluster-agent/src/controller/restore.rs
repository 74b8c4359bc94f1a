//! Restoring an instance from a backup, level-triggered like a rotation: the ManagedInstance says which
//! restore generation is wanted, and the status which one the cluster applied. A restore runs as a Job
//! against the serving instance (`render::backup::restore_job`); once the Job completed, the restore is
//! applied. A restore that fails fails its operation with the Job's reason and leaves the data as the
//! failed load left it (a dump is loaded collection by collection). PostgreSQL is restored only into a
//! new instance, whose Cluster CloudNativePG bootstraps from the backup: the restore is applied once that
//! Cluster serves.

use kube::{ResourceExt as _, api::Patch};

use super::Context;
use crate::{
    Result,
    crd::ManagedInstance,
    render::{
        ChildKind, apply_params,
        backup::{self, restore_job, restore_job_name},
        job,
    },
};

/// Where an instance's restore stands after a reconcile.
#[derive(Debug, Default)]
pub(super) struct Restore {
    /// the restore generation the data is at
    pub applied: u64,
    /// the Job of the restore in progress (kept by the pruning)
    pub job: Option<String>,
    /// why the restore failed, if it did
    pub failure: Option<String>,
}

/// Takes the next step of the restore `mi` asks for, if any.
pub(super) async fn restore(mi: &ManagedInstance, ctx: &Context, writes: &mut u32) -> Result<Restore> {
    let wanted = mi.spec.aspect_generations().restore;
    let reported = mi.status.as_ref().and_then(|s| s.applied).map_or(0, |a| a.restore);
    if wanted == 0 || reported >= wanted {
        return Ok(Restore { applied: wanted, ..Restore::default() });
    }
    let waiting = Restore { applied: reported, ..Restore::default() };
    let fail = |why: String| {
        Ok(Restore { applied: reported, job: None, failure: Some(format!("RestoreFailed: {why}")) })
    };
    let Some(target) = &mi.spec.restore else { return fail("the restore names no backup".into()) };
    let Some(store) = &ctx.config.backup_store else {
        return fail("this cluster has no backup store configured".into());
    };
    if mi.spec.service == "postgresql" {
        // Recovered by CloudNativePG as the Cluster bootstraps (`render::barman`): done once it serves.
        if crate::render::barman::base_backup(&target.location).is_none() {
            return fail(format!("backup {} is not a PostgreSQL base backup", target.backup_id));
        }
        let serving = mi.status.as_ref().is_some_and(|s| s.phase == "Ready");
        return Ok(if serving { Restore { applied: wanted, ..Restore::default() } } else { waiting });
    }
    if mi.spec.service == "grafana" {
        // Loaded by the StatefulSet's init container as the pods roll (`render::backup::grafana_restore`):
        // done once the rollout of a generation that carries it is ready.
        let status = mi.status.as_ref();
        let rolled = status.and_then(|s| s.observed_generation).is_some_and(|g| g >= wanted)
            && status.is_some_and(|s| s.phase == "Ready");
        return Ok(if rolled { Restore { applied: wanted, ..Restore::default() } } else { waiting });
    }
    let namespace = mi.namespace().unwrap_or_default();
    let name = restore_job_name(mi, wanted);
    let Some(job) = ctx.current(ChildKind::Job, &namespace, &name) else {
        // The Job loads into the running service: wait until it serves.
        if mi.status.as_ref().is_none_or(|s| s.phase != "Ready") {
            return Ok(Restore { job: Some(name), ..waiting });
        }
        let Some(job) = restore_job(mi, wanted, &target.location) else {
            return fail(format!("restores of {} instances are not built yet", mi.spec.service));
        };
        // Keys granted for this restore's source (the converge pass asked for them; a newer restore
        // may ask again).
        let secret_name = backup::store_secret_name(mi);
        let current = ctx.current(ChildKind::Secret, &namespace, &secret_name);
        if let Some(written) = crate::store_access::ensure(&ctx.config, store, mi, current.as_ref()).await? {
            ctx.remember(ChildKind::Secret, &namespace, &secret_name, Some(written));
            *writes += 1;
        }
        let written = ctx
            .api(ChildKind::Job, &namespace)
            .patch(&job.name, &apply_params(), &Patch::Apply(&job.object))
            .await?;
        ctx.remember(ChildKind::Job, &namespace, &job.name, Some(serde_json::to_value(&written)?));
        *writes += 1;
        return Ok(Restore { job: Some(name), ..waiting });
    };
    match job::outcome(&job) {
        None => Ok(Restore { job: Some(name), ..waiting }),
        Some(Err(why)) => {
            tracing::warn!(job = %name, %why, "restore failed");
            Ok(Restore { job: Some(name), failure: Some(format!("RestoreFailed: {why}")), ..waiting })
        }
        Some(Ok(())) => Ok(Restore { applied: wanted, ..Restore::default() }),
    }
}

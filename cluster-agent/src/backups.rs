//! The backup runner: makes the backups the control plane asked for on this cluster and reports each
//! one's start and outcome as observed events.
//!
//! Level-triggered over two inputs — the backups the mirror learned from the cluster's subjects, and the
//! backup Jobs in the cluster (watched) — so a backup asked for while the agent was down runs once it is
//! back, and one whose Job finished while it was down is reported then. A Job is the record of a
//! backup in the cluster: it is made once (deterministic name, `AlreadyExists` is fine), and once its
//! outcome is reported it carries [`REPORTED_ANNOTATION`], so a restarted agent does not report it again.

use std::{collections::HashSet, sync::Arc, time::Duration};

use domain::{BackupSource, ServiceType, observed::ObservedEvent};
use futures::StreamExt as _;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    AgentConfig, Result,
    crd::ManagedInstance,
    mirror::{Desired, DesiredLifecycle},
    publish::{About, publish},
    render::{
        apply_params,
        backup::{self, BACKUP_LABEL, REPORTED_ANNOTATION, Uploaded},
        job, namespace,
    },
};

/// How often every backup is looked at again even when nothing changed (a safety net; changes of Jobs
/// and of the desired backups trigger a pass at once).
const RESYNC: Duration = Duration::from_secs(30);

/// Runs until cancelled.
pub(crate) async fn run(config: Arc<AgentConfig>, desired: Arc<Desired>) -> anyhow::Result<()> {
    let writer = reflector::store::Writer::default();
    let jobs: Store<Job> = writer.as_reader();
    let mut job_events = reflector::reflector(
        writer,
        watcher(Api::<Job>::all(config.client.clone()), watcher::Config::default().labels(BACKUP_LABEL)),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    let mut changed = desired.backups_changed.subscribe();
    let jetstream = async_nats::jetstream::new(config.nats.clone());
    // Outcomes reported by this process (a Job's annotation records them across restarts).
    let mut reported: HashSet<Uuid> = HashSet::new();
    // Backups whose Job this process made: until the watch shows the Job, it is not made (nor its start
    // reported) again. A restarted agent lists the Jobs before its first pass.
    let mut started: HashSet<Uuid> = HashSet::new();
    loop {
        tokio::select! {
            event = job_events.next() => if event.is_none() { return Ok(()) },
            result = changed.changed() => if result.is_err() { return Ok(()) },
            () = tokio::time::sleep(RESYNC) => {}
        }
        if !desired.is_rebuilt() || jobs.wait_until_ready().await.is_err() {
            continue;
        }
        for (backup_id, backup) in desired.backups() {
            let Some(source) = backup.source() else { continue };
            if backup.deletion_requested() || reported.contains(&backup_id) {
                continue;
            }
            let step = Step {
                config: &config,
                desired: &desired,
                jobs: &jobs,
                jetstream: &jetstream,
                started: &mut started,
            };
            match step.run(backup_id, source).await {
                Ok(true) => {
                    reported.insert(backup_id);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(backup = %backup_id, error = %e, "backup step failed; retrying"),
            }
        }
    }
}

struct Step<'a> {
    config: &'a AgentConfig,
    desired: &'a Desired,
    jobs: &'a Store<Job>,
    jetstream: &'a async_nats::jetstream::Context,
    started: &'a mut HashSet<Uuid>,
}

impl Step<'_> {
    /// Takes the backup's next step; `true` once its outcome is reported.
    async fn run(self, backup_id: Uuid, source: &BackupSource) -> Result<bool> {
        let ns = namespace(&source.project);
        let name = backup::job_name(backup_id);
        let about = About {
            project: &source.project,
            instance_id: source.instance_id,
            desired_generation: self.desired.instance_version(source.instance_id),
        };
        let job = self.jobs.get(&ObjectRef::new(&name).within(&ns));
        let Some(job) = job else {
            if self.started.contains(&backup_id) {
                // Made and reported by this process; the watch has not shown it yet.
                return Ok(false);
            }
            // Only an instance the control plane keeps is backed up; a backup asked for just before the
            // deprovisioning began is reported as failed rather than left waiting.
            match self.desired.lifecycle(source.instance_id) {
                DesiredLifecycle::Active => {}
                DesiredLifecycle::NotYetKnown => return Ok(false),
                DesiredLifecycle::Deprovisioning | DesiredLifecycle::Unknown => {
                    let reason = "the instance was deprovisioned before the backup started".to_owned();
                    self.report(about, ObservedEvent::BackupFailed { backup_id, reason }).await?;
                    return Ok(true);
                }
            }
            if !matches!(source.service, ServiceType::Mongodb) {
                let reason = format!("backups of {} instances are not built yet", source.service.as_str());
                self.report(about, ObservedEvent::BackupFailed { backup_id, reason }).await?;
                return Ok(true);
            }
            let Some(target) = &self.config.backup_store else {
                let reason = "this cluster has no backup store configured".to_owned();
                self.report(about, ObservedEvent::BackupFailed { backup_id, reason }).await?;
                return Ok(true);
            };
            let instances: Api<ManagedInstance> = Api::namespaced(self.config.client.clone(), &ns);
            let Some(mi) = instances.get_opt(&source.instance_name).await? else { return Ok(false) };
            // The store's keys reach the cluster as a Secret only.
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(self.config.client.clone(), &ns);
            secrets
                .patch(
                    backup::STORE_SECRET,
                    &apply_params(),
                    &Patch::Apply(backup::store_secret(&ns, target)),
                )
                .await?;
            let key = domain::backup::object_key(&source.project, source.instance_id, backup_id);
            let Some(child) = backup::job(&mi, backup_id, &key) else { return Ok(false) };
            let jobs: Api<Job> = Api::namespaced(self.config.client.clone(), &ns);
            jobs.patch(&child.name, &apply_params(), &Patch::Apply(&child.object)).await?;
            self.report(about, ObservedEvent::BackupStarted { backup_id }).await?;
            self.started.insert(backup_id);
            return Ok(false);
        };
        if job.annotations().contains_key(REPORTED_ANNOTATION) {
            return Ok(true);
        }
        let value = serde_json::to_value(job.as_ref())?;
        let event = match job::outcome(&value) {
            None => return Ok(false),
            Some(Err(why)) => {
                ObservedEvent::BackupFailed { backup_id, reason: format!("BackupJobFailed: {why}") }
            }
            Some(Ok(())) => match self.uploaded(&ns, &name).await? {
                Some(uploaded) => {
                    let status = job.status.clone().unwrap_or_default();
                    let duration_ms = match (status.start_time, status.completion_time) {
                        (Some(start), Some(end)) => {
                            (end.0.as_millisecond() - start.0.as_millisecond()).max(0) as u64
                        }
                        _ => 0,
                    };
                    ObservedEvent::BackupCompleted {
                        backup_id,
                        location: domain::backup::object_key(&source.project, source.instance_id, backup_id),
                        size_bytes: uploaded.size,
                        sha256: uploaded.sha256,
                        duration_ms,
                    }
                }
                None => ObservedEvent::BackupFailed {
                    backup_id,
                    reason: "the backup Job completed without saying what it uploaded".into(),
                },
            },
        };
        self.report(about, event).await?;
        let jobs: Api<Job> = Api::namespaced(self.config.client.clone(), &ns);
        let patch = json!({"metadata": {"annotations": {REPORTED_ANNOTATION: "true"}}});
        jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(true)
    }

    /// What the Job's upload container wrote to its termination message.
    async fn uploaded(&self, ns: &str, job: &str) -> Result<Option<Uploaded>> {
        let pods: Api<Pod> = Api::namespaced(self.config.client.clone(), ns);
        // The Job controller labels its pods with the Job's name (batch/v1 `batch.kubernetes.io/job-name`).
        let listed =
            pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await?;
        Ok(listed.items.iter().find_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            let upload = statuses.iter().find(|c| c.name == "upload")?;
            let message = upload.state.as_ref()?.terminated.as_ref()?.message.as_ref()?;
            serde_json::from_str::<Uploaded>(message).ok()
        }))
    }

    async fn report(&self, about: About<'_>, event: ObservedEvent) -> Result<()> {
        publish(self.config, self.jetstream, about, event).await
    }
}

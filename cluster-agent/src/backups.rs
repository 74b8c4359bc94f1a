//! The backup runner: makes the backups the control plane asked for on this cluster and reports each
//! one's start and outcome as observed events.
//!
//! Level-triggered over two inputs — the backups the mirror learned from the cluster's subjects, and the
//! backup Jobs in the cluster (watched) — so a backup asked for while the agent was down runs once it is
//! back, and one whose Job finished while it was down is reported then. A Job (for PostgreSQL, a
//! CloudNativePG `Backup` through the Barman Cloud plugin; see `render::barman`) is the record of a
//! backup in the cluster: it is made once (deterministic name, `AlreadyExists` is fine), and once its
//! outcome is reported it carries [`REPORTED_ANNOTATION`], so a restarted agent does not report it again.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio_util::task::AbortOnDropHandle;

use domain::{BackupSource, ServiceType, observed::ObservedEvent};
use futures::StreamExt as _;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
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
        barman, job, namespace,
    },
};

/// How often every backup is looked at again even when nothing changed (a safety net; changes of Jobs
/// and of the desired backups trigger a pass at once).
const RESYNC: Duration = Duration::from_secs(30);

/// Runs until cancelled.
pub(crate) async fn run(config: Arc<AgentConfig>, desired: Arc<Desired>) -> anyhow::Result<()> {
    // Each watch is driven by a task of its own, so waiting for one cache to be ready never stalls the
    // other; every change wakes the loop.
    let changes = Arc::new(tokio::sync::Notify::new());
    let writer = reflector::store::Writer::default();
    let jobs: Store<Job> = writer.as_reader();
    let job_events = reflector::reflector(
        writer,
        watcher(Api::<Job>::all(config.client.clone()), watcher::Config::default().labels(BACKUP_LABEL)),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    let _jobs_watch = AbortOnDropHandle::new(tokio::spawn(drive(job_events, changes.clone())));
    let writer = reflector::store::Writer::new(postgres_backups());
    let pg_backups: Store<DynamicObject> = writer.as_reader();
    let pg_backup_events = reflector::reflector(
        writer,
        watcher(
            Api::<DynamicObject>::all_with(config.client.clone(), &postgres_backups()),
            watcher::Config::default().labels(BACKUP_LABEL),
        ),
    )
    .default_backoff()
    .touched_objects()
    .boxed();
    let _pg_backups_watch = AbortOnDropHandle::new(tokio::spawn(drive(pg_backup_events, changes.clone())));
    let mut changed = desired.backups_changed.subscribe();
    let jetstream = streams::accounts::agent_jetstream(config.nats.clone());
    // Outcomes reported by this process (a Job's annotation records them across restarts).
    let mut reported: HashSet<Uuid> = HashSet::new();
    // Backups whose Job this process made: until the watch shows the Job, it is not made (nor its start
    // reported) again. A restarted agent lists the Jobs before its first pass.
    let mut started: HashSet<Uuid> = HashSet::new();
    loop {
        tokio::select! {
            () = changes.notified() => {},
            result = changed.changed() => if result.is_err() { return Ok(()) },
            () = tokio::time::sleep(RESYNC) => {}
        }
        if !desired.is_rebuilt()
            || jobs.wait_until_ready().await.is_err()
            || pg_backups.wait_until_ready().await.is_err()
        {
            continue;
        }
        for (backup_id, backup) in desired.backups() {
            let Some(source) = backup.source() else { continue };
            if backup.deletion_requested() {
                if let Err(e) = remove_record(&config, &jobs, &pg_backups, backup_id, source).await {
                    tracing::warn!(backup = %backup_id, error = %e, "removing a backup's Job failed; retrying");
                }
                continue;
            }
            if reported.contains(&backup_id) {
                continue;
            }
            let step = Step {
                config: &config,
                desired: &desired,
                jobs: &jobs,
                pg_backups: &pg_backups,
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

/// Removes the record of a backup whose deletion the control plane asked for: its Job (with its pod) or
/// its CloudNativePG `Backup`. Until then the record is what tells a restarted agent the backup was made
/// and reported, so it is kept for as long as the backup is; a Job therefore has no
/// `ttlSecondsAfterFinished` (its removal by Kubernetes would have the backup made again). One request
/// while the watch still shows the record, none afterwards.
async fn remove_record(
    config: &AgentConfig,
    jobs: &Store<Job>,
    pg_backups: &Store<DynamicObject>,
    backup_id: Uuid,
    source: &BackupSource,
) -> Result<()> {
    let ns = namespace(&source.project);
    // A Job's pods are its dependents; the API's default for a Job is to orphan them (batch/v1), so the
    // deletion asks for them to go too.
    let params = DeleteParams::background();
    let gone = |result: kube::Result<_>| match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    if source.service == ServiceType::Postgresql {
        let name = barman::backup_name(backup_id);
        if pg_backups.get(&ObjectRef::new_with(&name, postgres_backups()).within(&ns)).is_some() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(config.client.clone(), &ns, &postgres_backups());
            gone(api.delete(&name, &params).await.map(|_| ()))?;
        }
    } else {
        let name = backup::job_name(backup_id);
        if jobs.get(&ObjectRef::new(&name).within(&ns)).is_some() {
            gone(
                Api::<Job>::namespaced(config.client.clone(), &ns).delete(&name, &params).await.map(|_| ()),
            )?;
        }
    }
    Ok(())
}

/// Polls a watch until it ends, waking `changes` at each event.
async fn drive<T>(mut events: futures::stream::BoxStream<'static, T>, changes: Arc<tokio::sync::Notify>) {
    while events.next().await.is_some() {
        changes.notify_one();
    }
}

/// CloudNativePG's `Backup` (`postgresql.cnpg.io/v1`).
fn postgres_backups() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".into(),
        version: "v1".into(),
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Backup".into(),
        plural: "backups".into(),
    }
}

struct Step<'a> {
    config: &'a AgentConfig,
    desired: &'a Desired,
    jobs: &'a Store<Job>,
    pg_backups: &'a Store<DynamicObject>,
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
        let postgres = source.service == ServiceType::Postgresql;
        // What records the backup in the cluster, as JSON: a Job, or for PostgreSQL a `Backup`.
        let record = if postgres {
            let key = ObjectRef::new_with(&barman::backup_name(backup_id), postgres_backups()).within(&ns);
            self.pg_backups.get(&key).map(|b| serde_json::to_value(b.as_ref())).transpose()?
        } else {
            let key = ObjectRef::new(&name).within(&ns);
            self.jobs.get(&key).map(|j| serde_json::to_value(j.as_ref())).transpose()?
        };
        let Some(record) = record else {
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
            let Some(target) = &self.config.backup_store else {
                let reason = "this cluster has no backup store configured".to_owned();
                self.report(about, ObservedEvent::BackupFailed { backup_id, reason }).await?;
                return Ok(true);
            };
            let instances: Api<ManagedInstance> = Api::namespaced(self.config.client.clone(), &ns);
            let Some(mi) = instances.get_opt(&source.instance_name).await? else { return Ok(false) };
            // The instance's own keys reach the cluster as its store Secret only.
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(self.config.client.clone(), &ns);
            let current = secrets.get_opt(&backup::store_secret_name(&mi)).await?;
            let current = current.map(|secret| serde_json::to_value(&secret)).transpose()?;
            crate::store_access::ensure(self.config, target, &mi, current.as_ref()).await?;
            if postgres {
                // The Cluster archives to the instance's ObjectStore (the instance's controller applies
                // both); the plugin takes the base backup there.
                let object = barman::backup(&mi, backup_id);
                self.pg_api(&ns)
                    .patch(&barman::backup_name(backup_id), &apply_params(), &Patch::Apply(&object))
                    .await?;
            } else {
                let key = domain::backup::object_key(&source.project, source.instance_id, backup_id);
                let Some(child) = backup::job(&mi, backup_id, &key) else { return Ok(false) };
                let jobs: Api<Job> = Api::namespaced(self.config.client.clone(), &ns);
                jobs.patch(&child.name, &apply_params(), &Patch::Apply(&child.object)).await?;
            }
            self.report(about, ObservedEvent::BackupStarted { backup_id }).await?;
            self.started.insert(backup_id);
            return Ok(false);
        };
        if record["metadata"]["annotations"][REPORTED_ANNOTATION].is_string() {
            return Ok(true);
        }
        let event = if postgres {
            match barman::outcome(&record, &source.project, source.instance_id) {
                None => None,
                Some(Err(why)) => {
                    Some(ObservedEvent::BackupFailed { backup_id, reason: format!("BackupFailed: {why}") })
                }
                Some(Ok((location, duration_ms))) => match self.total_size(&ns, source, &location).await {
                    Ok(size_bytes) => Some(ObservedEvent::BackupCompleted {
                        backup_id,
                        location,
                        size_bytes,
                        sha256: None,
                        duration_ms,
                    }),
                    Err(why) => {
                        tracing::warn!(backup = %backup_id, %why, "sizing a base backup failed; retrying");
                        None
                    }
                },
            }
        } else {
            self.job_outcome(&record, &ns, &name, backup_id, source).await?
        };
        let Some(event) = event else { return Ok(false) };
        self.report(about, event).await?;
        let patch = json!({"metadata": {"annotations": {REPORTED_ANNOTATION: "true"}}});
        if postgres {
            self.pg_api(&ns)
                .patch(&barman::backup_name(backup_id), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        } else {
            let jobs: Api<Job> = Api::namespaced(self.config.client.clone(), &ns);
            jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(true)
    }

    fn pg_api(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.config.client.clone(), ns, &postgres_backups())
    }

    /// The total size of a base backup's objects, as the store lists them with the instance's own keys
    /// (CloudNativePG reports none).
    async fn total_size(
        &self,
        ns: &str,
        source: &BackupSource,
        prefix: &str,
    ) -> std::result::Result<u64, String> {
        let Some(target) = &self.config.backup_store else { return Err("no backup store".into()) };
        let instances: Api<ManagedInstance> = Api::namespaced(self.config.client.clone(), ns);
        let mi = instances
            .get_opt(&source.instance_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("instance {} is gone", source.instance_name))?;
        let store =
            crate::store_access::instance_store(self.config, target, &mi).await.map_err(|e| e.to_string())?;
        let objects = store.list(prefix).await.map_err(|e| e.to_string())?;
        if objects.is_empty() {
            return Err(format!("no objects under {prefix}"));
        }
        Ok(objects.iter().map(|o| o.size).sum())
    }

    /// What a backup Job's end reports; `None` while it runs.
    async fn job_outcome(
        &self,
        job: &serde_json::Value,
        ns: &str,
        name: &str,
        backup_id: Uuid,
        source: &BackupSource,
    ) -> Result<Option<ObservedEvent>> {
        let event = match job::outcome(job) {
            None => return Ok(None),
            Some(Err(why)) => {
                ObservedEvent::BackupFailed { backup_id, reason: format!("BackupJobFailed: {why}") }
            }
            Some(Ok(())) => match self.uploaded(ns, name).await? {
                Some(uploaded) => {
                    let job: Job = serde_json::from_value(job.clone())?;
                    let status = job.status.unwrap_or_default();
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
                        sha256: Some(uploaded.sha256),
                        duration_ms,
                    }
                }
                None => ObservedEvent::BackupFailed {
                    backup_id,
                    reason: "the backup Job completed without saying what it uploaded".into(),
                },
            },
        };
        Ok(Some(event))
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

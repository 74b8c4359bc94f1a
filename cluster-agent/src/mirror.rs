//! The mirror half: the cluster's instance events (JetStream) → `ManagedInstance` resources.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, AckKind};
use domain::{Instance, Lifecycle, observed::ObservedEvent};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use streams::{EventBatch, cluster_feed};
use uuid::Uuid;

use crate::{
    AgentConfig, Error, Result,
    crd::{ManagedInstance, ManagedInstanceSpec},
    publish::{About, publish},
    render::{apply_params, egress::Egress, namespace},
};

/// Messages handled at once. Each instance is still handled by one at a time (see `Desired::lock`).
const IN_FLIGHT: usize = 64;

/// What the controller may conclude about an instance from the control plane's desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DesiredLifecycle {
    /// the start-up rebuild has not finished: nothing is known yet
    NotYetKnown,
    /// provisioned and not being deprovisioned: its data must stay
    Active,
    /// the control plane deprovisions it
    Deprovisioning,
    /// the cluster's subjects hold no such instance (a ManagedInstance made by hand)
    Unknown,
}

/// The control plane's desired state of the cluster's instances, shared by the mirror and the controller.
#[derive(Default)]
pub(crate) struct Desired {
    /// the start-up rebuild is done
    rebuilt: AtomicBool,
    /// latest known state and version of each instance
    instances: Mutex<HashMap<Uuid, (Instance, u64)>>,
    /// version last mirrored into the cluster
    mirrored: Mutex<HashMap<Uuid, u64>>,
    /// one mirror at a time per instance
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    namespaces: Mutex<HashSet<String>>,
    /// the ManagedInstances the cluster held when the agent started (one LIST), so the start-up rebuild
    /// writes only what differs; `None` when that read failed (everything is written, as before)
    at_start: Mutex<Option<AtStart>>,
    /// latest known state and version of each backup of the cluster's instances
    backups: Mutex<HashMap<Uuid, (domain::Backup, u64)>>,
    /// bumped whenever a backup is learned, so the backup runner looks again
    pub(crate) backups_changed: tokio::sync::watch::Sender<u64>,
}

/// What the cluster held when the agent started. Each instance's entry is used once, by its first mirror:
/// later mirrors act on what happened since.
#[derive(Default)]
struct AtStart {
    /// the spec of each ManagedInstance, by instance
    mirrors: HashMap<Uuid, ManagedInstanceSpec>,
    /// instances whose entry was used
    used: HashSet<Uuid>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Desired {
    /// Takes a batch's resulting state if it is newer than what is known. Returns the instance id, for a
    /// batch of an instance (a backup's is handed to the backup runner).
    ///
    /// What is learned is the instance as this cluster must run it (`Instance::part_on`): itself, the copy a
    /// migration placed here, or (moved away, or a failed migration's copy) to be removed.
    fn learn(&self, batch: &EventBatch, cluster: &str) -> Result<Option<Uuid>> {
        if batch.aggregate_type == <domain::Backup as cqrs_es::Aggregate>::TYPE {
            self.learn_backup(batch)?;
            return Ok(None);
        }
        let version = batch.last_version();
        // The agent holds no rights to replay a subject: a message whose snapshot it cannot read and
        // whose events are not the whole history is refused (and counted) rather than misread.
        let instance: Instance =
            batch.aggregate::<Instance>().ok_or_else(|| streams::DecodeError::NoReadableSnapshot {
                aggregate_id: batch.aggregate_id.clone(),
                snapshot_version: <Instance as streams::StreamAggregate>::SNAPSHOT_VERSION,
            })??;
        let Some(spec) = instance.spec() else { return Ok(None) };
        let id = spec.id;
        let instance = instance.part_on(cluster);
        let mut instances = lock(&self.instances);
        if instances.get(&id).is_none_or(|(_, known)| *known < version) {
            instances.insert(id, (instance, version));
        }
        Ok(Some(id))
    }

    fn learn_backup(&self, batch: &EventBatch) -> Result<()> {
        let version = batch.last_version();
        let backup: domain::Backup = batch.aggregate::<domain::Backup>().ok_or_else(|| {
            streams::DecodeError::NoReadableSnapshot {
                aggregate_id: batch.aggregate_id.clone(),
                snapshot_version: <domain::Backup as streams::StreamAggregate>::SNAPSHOT_VERSION,
            }
        })??;
        let Some((_, _, backup_id)) = streams::backups::parse_aggregate_id(&batch.aggregate_id) else {
            return Ok(());
        };
        let mut backups = lock(&self.backups);
        if backups.get(&backup_id).is_none_or(|(_, known)| *known < version) {
            backups.insert(backup_id, (backup, version));
            self.backups_changed.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Every backup known, with its id.
    pub(crate) fn backups(&self) -> Vec<(Uuid, domain::Backup)> {
        lock(&self.backups).iter().map(|(id, (backup, _))| (*id, backup.clone())).collect()
    }

    /// Whether the agent made (or found, at start) project namespace `ns`.
    pub(crate) fn has_namespace(&self, ns: &str) -> bool {
        lock(&self.namespaces).contains(ns)
    }

    /// Whether the start-up rebuild is done.
    pub(crate) fn is_rebuilt(&self) -> bool {
        self.rebuilt.load(Ordering::Acquire)
    }

    /// The instance version the control plane last decided, for reports about the instance.
    pub(crate) fn instance_version(&self, id: Uuid) -> u64 {
        lock(&self.instances).get(&id).map_or(0, |(_, version)| *version)
    }

    /// What the cluster held for `id` when the agent started, the first time it is asked: `Some(None)`
    /// when it held no ManagedInstance for it; `None` when that is unknown or was asked before.
    fn at_start(&self, id: Uuid) -> Option<Option<ManagedInstanceSpec>> {
        let mut at_start = lock(&self.at_start);
        let at_start = at_start.as_mut()?;
        if !at_start.used.insert(id) {
            return None;
        }
        Some(at_start.mirrors.remove(&id))
    }

    fn lock(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(id).or_default().clone()
    }

    /// Whether the control plane wants `id` to exist.
    pub(crate) fn lifecycle(&self, id: Uuid) -> DesiredLifecycle {
        if !self.rebuilt.load(Ordering::Acquire) {
            return DesiredLifecycle::NotYetKnown;
        }
        match lock(&self.instances).get(&id).map(|(instance, _)| instance.lifecycle()) {
            Some(Lifecycle::Active) => DesiredLifecycle::Active,
            Some(Lifecycle::Deprovisioning) => DesiredLifecycle::Deprovisioning,
            Some(Lifecycle::Absent) | None => DesiredLifecycle::Unknown,
        }
    }
}

/// Runs the mirror until cancelled: the cluster's consumer is rewound to replay the newest message of
/// every instance subject of the cluster (`streams::cluster_feed`), then followed; beside it a watch
/// restores deleted ManagedInstances of active instances.
pub(crate) async fn run(
    config: Arc<AgentConfig>,
    egress: Arc<Egress>,
    desired: Arc<Desired>,
) -> anyhow::Result<()> {
    let js = streams::accounts::agent_jetstream(config.nats.clone());
    // The agent never administers JetStream (the control plane makes the cluster's stream and consumer
    // when it registers the cluster): it looks its consumer up, and waits while it does not exist yet.
    let consumer = open_consumer(&js, &config).await;
    remember_cluster(&config, &egress, &desired).await;
    // A slow or briefly unavailable JetStream (a replicated stream electing a leader, a loaded server)
    // is waited out, as the consumer lookup is: the agent keeps running and retries.
    let mut wait = Duration::from_millis(200);
    let rebuilt_at = loop {
        match cluster_feed::rewind(&js, &config.settings, &config.cluster).await {
            Ok(at) => break at,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "rewinding the cluster's consumer failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    if rebuilt_at == 0 {
        finish_rebuild(&config, &desired);
    }
    // Owned by this future: it stops when the mirror does, not detached. Until the rebuild is done it
    // restores nothing (the lifecycle is not known yet); the rebuild mirrors every instance anyway.
    let _restorer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(restore_deleted_mirrors(
        config.clone(),
        egress.clone(),
        desired.clone(),
    )));

    let messages =
        consumer.messages().await.map_err(|e| anyhow::anyhow!("following the cluster's consumer: {e}"))?;
    messages
        // Learned in delivery order, before any mirror runs, so that once the message at `rebuilt_at`
        // is learned, every instance is.
        .map(|message| {
            let message = message?;
            config.metrics.events_received.inc();
            let learned = EventBatch::from_slice(&message.payload)
                .map_err(Error::from)
                .and_then(|b| desired.learn(&b, &config.cluster));
            if !desired.rebuilt.load(Ordering::Acquire)
                && message.info().is_ok_and(|info| info.stream_sequence >= rebuilt_at)
            {
                finish_rebuild(&config, &desired);
            }
            Ok::<_, async_nats::jetstream::consumer::pull::MessagesError>((message, learned))
        })
        .for_each_concurrent(IN_FLIGHT, |delivered| {
            let (config, egress, desired) = (config.clone(), egress.clone(), desired.clone());
            async move {
                let (message, learned) = match delivered {
                    Ok(delivered) => delivered,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        return;
                    }
                };
                let outcome = match learned {
                    Ok(Some(id)) => mirror(&config, &egress, &desired, id).await,
                    Ok(None) => Ok(()),
                    Err(e) => {
                        // Undecodable: redelivering will not help. Report, park and move on.
                        skip_undecodable(&config, &message.subject, &e);
                        park(&config, &message, &e).await;
                        Ok(())
                    }
                };
                let ack = match outcome {
                    Ok(()) => message.ack().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "mirror failed; redelivering");
                        message.ack_with(AckKind::Nak(Some(crate::RETRY_AFTER))).await
                    }
                };
                if let Err(e) = ack {
                    tracing::warn!(error = %e, "ack failed; the message will be redelivered");
                }
            }
        })
        .await;
    Ok(())
}

fn finish_rebuild(config: &AgentConfig, desired: &Desired) {
    desired.rebuilt.store(true, Ordering::Release);
    desired.backups_changed.send_modify(|n| *n += 1);
    tracing::info!(cluster = %config.cluster, instances = lock(&desired.instances).len(), "desired state rebuilt");
}

fn skip_undecodable(config: &AgentConfig, subject: &str, error: &Error) {
    config.metrics.undecodable_events.inc();
    tracing::error!(%subject, %error, "undecodable instance event skipped");
}

/// Parks a copy of a message this agent cannot read where an operator sees it (`streams::dead_letters`).
async fn park(config: &AgentConfig, message: &jetstream::Message, error: &Error) {
    let stream = cluster_feed::desired_stream_name(&config.settings, &config.cluster);
    let sequence = message.info().map(|info| info.stream_sequence).unwrap_or_default();
    let reader = streams::dead_letters::Reader::Agent { cluster: config.cluster.clone() };
    let letter = streams::dead_letters::DeadLetter::new(
        reader,
        &stream,
        sequence,
        &message.subject,
        &error.to_string(),
        &message.payload,
    );
    if let Err(e) = letter.park(&streams::accounts::agent_jetstream(config.nats.clone())).await {
        tracing::error!(subject = %message.subject, error = %e, "parking an undecodable event failed");
    }
}

/// The cluster's consumer, once the control plane has made it. Looking it up needs no more than
/// `CONSUMER.INFO` on it.
async fn open_consumer(
    js: &jetstream::Context,
    config: &AgentConfig,
) -> jetstream::consumer::Consumer<jetstream::consumer::pull::Config> {
    let stream_name = cluster_feed::desired_stream_name(&config.settings, &config.cluster);
    let consumer_name = cluster_feed::agent_consumer_name(&config.cluster);
    let mut wait = Duration::from_millis(100);
    loop {
        // `get_stream_no_info` asks nothing of the server; the consumer lookup is the one request.
        match js.get_stream_no_info(&stream_name).await {
            Ok(stream) => match stream.get_consumer(&consumer_name).await {
                Ok(consumer) => return consumer,
                Err(e) => {
                    tracing::warn!(stream = %stream_name, consumer = %consumer_name, error = %e, "the cluster's consumer is not available yet; waiting for the control plane to register the cluster")
                }
            },
            Err(e) => {
                tracing::warn!(stream = %stream_name, error = %e, "the cluster's stream is not available yet")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Reads, with one LIST each, the ManagedInstances and the namespaces the agent made that the cluster
/// holds, so that rebuilding the desired state at start writes nothing that is already there: a restart
/// in steady state costs three reads, not a write per instance and per namespace. A failed read is logged
/// and costs only those writes. The namespaces' egress policies are checked against a third LIST, and
/// those missing or changed (made by an older agent, or under other settings) are applied again.
async fn remember_cluster(config: &AgentConfig, egress: &Egress, desired: &Desired) {
    let mirrors: Api<ManagedInstance> = Api::all(config.client.clone());
    match mirrors.list(&ListParams::default()).await {
        Ok(list) => {
            let mirrors = list
                .items
                .into_iter()
                .filter_map(|mi| Some((mi.spec.instance_id.parse().ok()?, mi.spec)))
                .collect();
            *lock(&desired.at_start) = Some(AtStart { mirrors, used: HashSet::new() });
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing ManagedInstances failed; the rebuild applies every one")
        }
    }
    let namespaces: Api<Namespace> = Api::all(config.client.clone());
    match namespaces.list(&ListParams::default().labels(MANAGED_BY)).await {
        // One an older agent made without the Pod Security label is applied again.
        Ok(list) => lock(&desired.namespaces).extend(
            list.items
                .into_iter()
                .filter(|n| {
                    n.labels().get(POD_SECURITY_ENFORCE).map(String::as_str) == Some(POD_SECURITY_LEVEL)
                })
                .map(|n| n.name_any()),
        ),
        Err(e) => tracing::warn!(error = %e, "listing namespaces failed; the rebuild applies every one"),
    }
    let namespaces: Vec<String> = lock(&desired.namespaces).iter().cloned().collect();
    match crate::egress::list(config).await {
        Ok(policies) => crate::egress::keep_all(config, egress, &namespaces, &policies).await,
        Err(e) => {
            tracing::warn!(error = %e, "listing the egress policies failed; applying them to every namespace");
            crate::egress::keep_all(config, egress, &namespaces, &[]).await;
        }
    }
}

/// The label of the namespaces the agent makes.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=cp-cluster-agent";

/// The Pod Security Admission label a namespace's enforced level is read from (k8s.io/pod-security-admission
/// v0.36.1 `api/constants.go`, `EnforceLevelLabel`). PSA is built into kube-apiserver (plugin `PodSecurity`,
/// on by default); a namespace without the label is `privileged`, i.e. unchecked.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// The level every project namespace enforces: `baseline` (k8s.io/pod-security-admission v0.36.1
/// `policy/check_*.go`: no privileged containers, host namespaces, hostPath volumes, host ports, added
/// capabilities beyond the default set, unconfined seccomp, unsafe sysctls, probes naming a host). Every
/// pod the agent renders meets it, and so do CloudNativePG's. Not `restricted`: a project's namespace
/// holds all its instances, and the MongoDB and InfluxDB images' entrypoints start as root, `chown` the
/// data directory and step down with `gosu` (docker-library/mongo 7.0 `docker-entrypoint.sh`:
/// `if [ "$1" = 'mongod' ] && [ "$(id -u)" = '0' ]; then … exec gosu mongodb`; influxdata-docker
/// influxdb/2.7 `entrypoint.sh` `create_directories`, `exec gosu influxdb`), which `restricted`'s
/// `runAsNonRoot` forbids. Whether they run unchanged as their own uid cannot be tried here (no container
/// runtime).
pub const POD_SECURITY_LEVEL: &str = "baseline";

/// A ManagedInstance deleted while its instance is active (by hand, or by a tool cleaning a namespace)
/// is put back from the desired state, and the drift is recorded. The controller has let the deleted
/// one go without touching its objects, claims or credentials (`controller::cleanup`), so the new one
/// finds them all in place.
async fn restore_deleted_mirrors(config: Arc<AgentConfig>, egress: Arc<Egress>, desired: Arc<Desired>) {
    let api: Api<ManagedInstance> = Api::all(config.client.clone());
    let js = streams::accounts::agent_jetstream(config.nats.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Delete(mi)) = event else { continue };
        let Ok(id) = mi.spec.instance_id.parse::<Uuid>() else { continue };
        if desired.lifecycle(id) != DesiredLifecycle::Active {
            continue;
        }
        lock(&desired.mirrored).remove(&id);
        if let Err(e) = mirror(&config, &egress, &desired, id).await {
            tracing::warn!(%id, error = %e, "restoring a deleted ManagedInstance failed; the next event of the instance retries");
            continue;
        }
        tracing::warn!(%id, name = %mi.name_any(), "ManagedInstance of an active instance was deleted; restored");
        let about =
            About { project: &mi.spec.project, instance_id: id, desired_generation: mi.spec.generation };
        let event = ObservedEvent::DriftHealed {
            instance_id: id,
            objects: vec![format!("ManagedInstance/{}", mi.name_any())],
            fields: Vec::new(),
        };
        if let Err(e) = publish(&config, &js, about, event).await {
            tracing::warn!(%id, error = %e, "publishing the drift event failed");
        }
    }
}

/// Makes the cluster's ManagedInstance match the newest desired state of `id` (level-triggered: whatever
/// message triggered it, the latest known state is what gets written).
async fn mirror(config: &AgentConfig, egress: &Egress, desired: &Desired, id: Uuid) -> Result<()> {
    let instance_lock = desired.lock(id);
    let _guard = instance_lock.lock().await;
    let Some((instance, version)) = lock(&desired.instances).get(&id).cloned() else { return Ok(()) };
    if lock(&desired.mirrored).get(&id) == Some(&version) {
        return Ok(());
    }
    let Some(spec) = instance.spec() else { return Ok(()) };
    let ns = namespace(&spec.project);
    let api: Api<ManagedInstance> = Api::namespaced(config.client.clone(), &ns);
    let at_start = desired.at_start(id);
    match instance.lifecycle() {
        Lifecycle::Active => {
            let Some(object) = crate::crd::desired_object(&instance, version)? else { return Ok(()) };
            // Already there as wanted when the agent started: nothing to write.
            if let Some(Some(found)) = &at_start
                && serde_json::from_value::<ManagedInstance>(object.clone())
                    .is_ok_and(|wanted| wanted.spec == *found)
            {
                lock(&desired.mirrored).insert(id, version);
                return Ok(());
            }
            ensure_namespace(config, egress, desired, &ns).await?;
            api.patch(&spec.name, &apply_params(), &Patch::Apply(&object)).await?;
        }
        // Gone already when the agent started: nothing to delete.
        Lifecycle::Deprovisioning if at_start == Some(None) => {
            lock(&desired.mirrored).insert(id, version);
            return Ok(());
        }
        Lifecycle::Deprovisioning => match api.delete(&spec.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
        Lifecycle::Absent => return Ok(()),
    }
    config.metrics.mirror_writes.inc();
    lock(&desired.mirrored).insert(id, version);
    Ok(())
}

/// Applies the project namespace `ns` with its labels, then its egress policies, before any object of an
/// instance is applied there: the instance's pods never run without them.
async fn ensure_namespace(config: &AgentConfig, egress: &Egress, desired: &Desired, ns: &str) -> Result<()> {
    if lock(&desired.namespaces).contains(ns) {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(config.client.clone());
    let (label, value) = MANAGED_BY.split_once('=').expect("a label selector of one label");
    let labels = json!({label: value, POD_SECURITY_ENFORCE: POD_SECURITY_LEVEL});
    let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
    api.patch(ns, &apply_params(), &Patch::Apply(&object)).await?;
    crate::egress::keep(config, egress, ns, &[]).await?;
    lock(&desired.namespaces).insert(ns.to_owned());
    Ok(())
}

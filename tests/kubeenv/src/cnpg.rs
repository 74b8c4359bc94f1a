//! The CloudNativePG operator's stand-in on the real API server: each `Cluster`'s instance pods and
//! status, and the parameters its PostgreSQL runs, as github.com/cloudnative-pg/cloudnative-pg v1.30.0
//! makes them:
//!
//! - Each instance is a pod `<cluster>-<serial>` (`pkg/specs/pods.go`, `GetInstanceName`,
//!   `buildInstance`) labelled `cnpg.io/cluster`, `cnpg.io/instanceName`, `cnpg.io/podRole: instance` and
//!   `app.kubernetes.io/*`, plus the Cluster's `inheritedMetadata` labels (`internal/controller/
//!   cluster_create.go`, `utils.InheritLabels`), owned by the Cluster, its spec in the `cnpg.io/podSpec`
//!   annotation (`NewInstance`); PostgreSQL runs in its container `postgres` with the Cluster's
//!   `imageName` and `resources`. kwok makes the pods Running and Ready.
//! - Each instance's data volume is a claim named after it, made before the pod (the default StorageClass
//!   binds it once the pod is scheduled) and grown when `spec.storage.size` grows ([`data_volume`]).
//! - A pod whose spec is not the one the Cluster asks for is deleted and made again under the same name,
//!   replicas first, the primary last, in phase "Upgrading cluster" (`internal/controller/
//!   cluster_upgrade.go`, `rolloutRequiredInstances`: `RegisterPhase(PhaseUpgrade)`, `upgradePod`); the
//!   Cluster is healthy again once every instance runs the spec.
//! - A change of parameters alone replaces no pod and writes no status (the instance manager rewrites
//!   `postgresql.conf` and reloads: `internal/management/controller/instance_controller.go`,
//!   `refreshConfigurationFiles`; `pkg/resources/status/patch.go` writes nothing when the status is
//!   unchanged): the old `Ready=True` stands, and the parameters are live once processed.
//! - A test can hold a Cluster ([`Cnpg::hold`]): nothing of it is processed (status, pods, parameters)
//!   until it is released, as while the operator has not reconciled a change yet.
//! - The agent's verification Job asks the PostgreSQL for its parameters (`cluster-agent`
//!   `render/pg_settings.rs`): its pod (left alone by kwok's pod-complete stage,
//!   `tests/kube-control-plane/kwok-stages.yaml`) ends `Succeeded`, as its script would, once the
//!   parameters it wants (env `WANTED`, on the Cluster of its `PGHOST` `<cluster>-rw`) are live.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use serde_json::{Value, json};

use crate::helpers::{cnpg_cluster_resource, healthy_cnpg_status};

/// Label on the pod template of the agent's configuration verification Job.
pub const VERIFIES_LABEL: &str = "cp.example.com/configuration-of";
/// How often the stand-in looks at every Cluster again (a release, a pod gone, a Job's pod running).
const TICK: Duration = Duration::from_millis(300);

/// What the stand-in holds and what each Cluster's PostgreSQL runs.
#[derive(Debug, Default)]
pub struct Cnpg {
    held: Mutex<HashSet<(String, String)>>,
    live: Mutex<HashMap<(String, String), Value>>,
}

impl Cnpg {
    /// From now on the Cluster `namespace/name` is not processed: its status, pods and running
    /// parameters stay as they are.
    pub fn hold(&self, namespace: &str, name: &str) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).insert((namespace.into(), name.into()));
    }

    /// The Cluster is processed again.
    pub fn release(&self, namespace: &str, name: &str) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&(namespace.into(), name.into()));
    }

    fn holds(&self, namespace: &str, name: &str) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).contains(&(namespace.into(), name.into()))
    }

    fn parameters_live(&self, namespace: &str, cluster: &str, wanted: &Value) -> bool {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(running) = live.get(&(namespace.to_owned(), cluster.to_owned())) else { return false };
        wanted.as_object().is_some_and(|w| w.iter().all(|(k, v)| running[k] == *v))
    }
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers.first()?.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

/// The spec of instance pod `pod` of `cluster`, as it is stored in `cnpg.io/podSpec`: PostgreSQL in its
/// `postgres` container, its data volume the claim named after the instance.
fn instance_spec(cluster: &Value, pod: &str) -> Value {
    json!({
        "containers": [{"name": "postgres", "image": cluster["spec"]["imageName"],
                        "resources": cluster["spec"]["resources"],
                        "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}]}],
        "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": pod}}],
    })
}

/// Gibibytes of a `<n>Gi` size (the only form the agent writes; the API server keeps it so).
fn gib(size: &str) -> Option<u64> {
    size.strip_suffix("Gi")?.parse().ok()
}

/// The data volume's claim of instance `pod`, made as CloudNativePG makes it
/// (`pkg/reconciler/persistentvolumeclaim/build.go`, `calculator.go` `pgDataCalculator`: named after the
/// instance, labels `cnpg.io/instanceName`, `cnpg.io/pvcRole: PG_DATA`, `app.kubernetes.io/*` and the
/// Cluster's inherited labels, owned by the Cluster, the default StorageClass), or, when it is smaller
/// than `spec.storage.size`, its request grown (`existing.go`, `reconcilePVCQuantity`; never shrunk; the
/// volume resizer then grows it: `helpers::provision_volumes`). Whether it was there already.
async fn data_volume(
    admin: &Client,
    cluster: &Value,
    pod: &str,
    serial: u64,
    claims: &[Arc<PersistentVolumeClaim>],
) -> anyhow::Result<bool> {
    let namespace = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let size = cluster["spec"]["storage"]["size"].as_str().unwrap_or("1Gi");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), namespace);
    let existing = claims.iter().find(|c| c.name_any() == pod && c.namespace().as_deref() == Some(namespace));
    if let Some(claim) = existing {
        let request = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        if gib(size) > gib(&request) {
            let grow = json!({"spec": {"resources": {"requests": {"storage": size}}}});
            api.patch(pod, &PatchParams::default(), &Patch::Merge(&grow)).await?;
        }
        return Ok(true);
    }
    let mut labels = json!({
        "cnpg.io/instanceName": pod, "cnpg.io/pvcRole": "PG_DATA",
        "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/component": "database",
        "app.kubernetes.io/managed-by": "cloudnative-pg",
    });
    if let (Some(labels), Some(inherited)) =
        (labels.as_object_mut(), cluster["spec"]["inheritedMetadata"]["labels"].as_object())
    {
        labels.extend(inherited.clone());
    }
    let claim = serde_json::from_value(json!({
        "metadata": {"name": pod, "labels": labels,
            "annotations": {"cnpg.io/nodeSerial": serial.to_string(), "cnpg.io/pvcStatus": "ready"},
            "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": name,
                                 "uid": cluster["metadata"]["uid"], "controller": true}]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }))?;
    match api.create(&PostParams::default(), &claim).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(false)
}

fn instance_pod(cluster: &Value, serial: u64, spec: &Value) -> Value {
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let pod = format!("{name}-{serial}");
    let role = if serial == 1 { "primary" } else { "replica" };
    let mut labels = json!({
        "cnpg.io/cluster": name, "cnpg.io/instanceName": pod, "cnpg.io/podRole": "instance",
        "cnpg.io/instanceRole": role, "role": role,
        "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "database", "app.kubernetes.io/managed-by": "cloudnative-pg",
    });
    if let (Some(labels), Some(inherited)) =
        (labels.as_object_mut(), cluster["spec"]["inheritedMetadata"]["labels"].as_object())
    {
        labels.extend(inherited.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "labels": labels,
            "annotations": {"cnpg.io/nodeSerial": serial.to_string(), "cnpg.io/podSpec": spec.to_string()},
            "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": name,
                                 "uid": cluster["metadata"]["uid"], "controller": true}]},
        "spec": spec,
    })
}

/// Brings the instance pods one step towards the spec: the first missing pod is made, or the first
/// outdated one (replicas first) deleted, or an extra one deleted. Whether every instance runs the spec.
async fn roll_one(
    admin: &Client,
    cluster: &Value,
    pods: &[Arc<Pod>],
    claims: &[Arc<PersistentVolumeClaim>],
) -> anyhow::Result<bool> {
    let namespace = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let instances = cluster["spec"]["instances"].as_u64().unwrap_or(1);
    let api: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let find = |pod: &str| {
        pods.iter().find(|p| p.name_any() == pod && p.namespace().as_deref() == Some(namespace)).cloned()
    };
    for serial in (1..=instances).rev() {
        let pod = format!("{name}-{serial}");
        let spec = instance_spec(cluster, &pod);
        let wanted = spec.to_string();
        if !data_volume(admin, cluster, &pod, serial, claims).await? {
            return Ok(false);
        }
        match find(&pod) {
            None => {
                let object = serde_json::from_value(instance_pod(cluster, serial, &spec))?;
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(false);
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => return Ok(false),
            Some(p) if p.annotations().get("cnpg.io/podSpec") != Some(&wanted) => {
                match api.delete(&pod, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(false);
            }
            Some(_) => {}
        }
    }
    let prefix = format!("{name}-");
    for p in pods.iter().filter(|p| p.namespace().as_deref() == Some(namespace)) {
        let extra = p.labels().get("cnpg.io/cluster").map(String::as_str) == Some(name)
            && p.name_any()
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s > instances);
        if extra && p.metadata.deletion_timestamp.is_none() {
            api.delete(&p.name_any(), &DeleteParams::default()).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

async fn write_status(admin: &Client, cluster: &Value, status: Value) -> anyhow::Result<()> {
    let namespace = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), namespace, &cnpg_cluster_resource());
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
    Ok(())
}

/// One step of the operator for one Cluster.
async fn reconcile(
    admin: &Client,
    cnpg: &Cnpg,
    postgres: &crate::barman::Servers,
    cluster: &Value,
    pods: &[Arc<Pod>],
    claims: &[Arc<PersistentVolumeClaim>],
) -> anyhow::Result<()> {
    let namespace = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    if cnpg.holds(namespace, name) || !cluster["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let healthy = healthy_cnpg_status(cluster);
    let current = &cluster["status"];
    let had_status = !current["phase"].is_null();
    // A recovering Cluster is made from its real PostgreSQL first (`crate::barman`).
    if !cluster["spec"]["bootstrap"]["recovery"].is_null()
        && current["phase"] != healthy["phase"]
        && let Err(e) = postgres.ensure(admin, namespace, name).await
    {
        postgres.note_failure(namespace, name, format!("{e:#}"));
        return Err(e.context("recovering a Cluster failed"));
    }
    // Another major in the image of a running server: CloudNativePG's in-place major upgrade, for real
    // (`crate::barman::major_upgrade`).
    if let Err(e) = postgres.follow_major(admin, cluster).await {
        postgres.note_failure(namespace, name, format!("{e:#}"));
        return Err(e.context("a major upgrade failed"));
    }
    // The parameters are the instance manager's to load: live from the first look at this spec.
    cnpg.live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((namespace.to_owned(), name.to_owned()), cluster["spec"]["postgresql"]["parameters"].clone());
    if !roll_one(admin, cluster, pods, claims).await? {
        if had_status && current["phase"] != "Upgrading cluster" {
            let mut upgrading = healthy.clone();
            upgrading["phase"] = json!("Upgrading cluster");
            upgrading["phaseReason"] = json!("the instances run another pod spec");
            upgrading["readyInstances"] = current["readyInstances"].clone();
            upgrading["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "ClusterIsNotReady",
                "message": "Cluster Is Not Ready",
                "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]);
            write_status(admin, cluster, upgrading).await?;
        }
        return Ok(());
    }
    let unchanged =
        ["instances", "readyInstances", "phase", "image"].iter().all(|k| current[k] == healthy[k]);
    if !unchanged {
        write_status(admin, cluster, healthy).await?;
    }
    Ok(())
}

/// Ends each running verification pod whose parameters are live, `Succeeded` as its script would.
async fn answer_verifications(admin: &Client, cnpg: &Cnpg, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
    for pod in pods {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if !pod.labels().contains_key(VERIFIES_LABEL) || !running || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let cluster = env(pod, "PGHOST").unwrap_or_default();
        let cluster = cluster.strip_suffix("-rw").unwrap_or_default();
        let wanted: Value =
            env(pod, "WANTED").and_then(|w| serde_json::from_str(&w).ok()).unwrap_or_default();
        if cnpg.holds(&namespace, cluster) || !cnpg.parameters_live(&namespace, cluster, &wanted) {
            continue;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let statuses: Vec<Value> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": now, "finishedAt": now}}})
            })
            .collect();
        let status = json!({"status": {"phase": "Succeeded", "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}});
        Api::<Pod>::namespaced(admin.clone(), &namespace)
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

/// Plays the operator: every Cluster and every verification pod, on each change and every [`TICK`].
pub(crate) async fn run(admin: Client, cnpg: Arc<Cnpg>, postgres: Arc<crate::barman::Servers>) {
    let clusters: Api<DynamicObject> = Api::all_with(admin.clone(), &cnpg_cluster_resource());
    let writer = reflector::store::Writer::<DynamicObject>::new(cnpg_cluster_resource());
    let cluster_store = writer.as_reader();
    let cluster_events = reflector::reflector(writer, watcher(clusters, watcher::Config::default()))
        .default_backoff()
        .map(|_| ());
    let (pod_store, writer) = reflector::store::<Pod>();
    let pod_events =
        reflector::reflector(writer, watcher(Api::<Pod>::all(admin.clone()), watcher::Config::default()))
            .default_backoff()
            .map(|_| ());
    let (claim_store, writer) = reflector::store::<PersistentVolumeClaim>();
    let claim_events = reflector::reflector(
        writer,
        watcher(Api::<PersistentVolumeClaim>::all(admin.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map(|_| ());
    let ticks = tokio_stream_ticks(TICK);
    let events = futures::stream::select(futures::stream::select(cluster_events, pod_events), claim_events);
    let mut triggers = futures::stream::select(events, ticks).boxed();
    while triggers.next().await.is_some() {
        let pods = pod_store.state();
        let claims = claim_store.state();
        for cluster in cluster_store.state() {
            let object = serde_json::to_value(&*cluster).unwrap_or_default();
            if let Err(e) = reconcile(&admin, &cnpg, &postgres, &object, &pods, &claims).await {
                tracing::warn!(error = format!("{e:#}"), cluster = %cluster.name_any(), "the CloudNativePG stand-in's step failed");
            }
        }
        if let Err(e) = answer_verifications(&admin, &cnpg, &pods).await {
            tracing::warn!(error = format!("{e:#}"), "answering a verification pod failed");
        }
    }
}

fn tokio_stream_ticks(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(every), |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

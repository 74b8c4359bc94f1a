//! CloudNativePG's instances as its operator makes and rolls them, and the parameters their PostgreSQL
//! runs, from github.com/cloudnative-pg/cloudnative-pg v1.30.0:
//!
//! - Each instance is a pod `<cluster>-<serial>` (`pkg/specs/pods.go`, `GetInstanceName`, `buildInstance`)
//!   labelled `cnpg.io/cluster`, `cnpg.io/instanceName`, `cnpg.io/podRole: instance` and the
//!   `app.kubernetes.io/*` labels, plus the Cluster's `inheritedMetadata` labels
//!   (`internal/controller/cluster_create.go`, `utils.InheritLabels`), owned by the Cluster, with its
//!   pod spec in the `cnpg.io/podSpec` annotation (`NewInstance`). Its PostgreSQL runs in the container
//!   `postgres` (`PostgresContainerName`) with the Cluster's `imageName` and `resources`.
//! - A pod whose spec is not the one the Cluster now asks for (another image, other resources) is
//!   deleted and made again under the same name, replicas first, the primary last
//!   (`internal/controller/cluster_upgrade.go`, `rolloutRequiredInstances`, `checkPodSpecIsOutdated`,
//!   `upgradePod`). A change of parameters alone replaces no pod: each instance manager rewrites its
//!   `postgresql.conf` and reloads (`internal/management/controller/instance_controller.go`,
//!   `refreshConfigurationFiles`, `Reload`); only parameters that need a restart restart PostgreSQL.
//!   Here the parameters a Cluster's PostgreSQL runs are those of the spec last settled.
//! - Each instance's data volume is a claim named after it, grown when `spec.storage.size` grows
//!   ([`data_volume`]).
//! - The agent's verification Job (label [`VERIFIES_LABEL`]) asks that PostgreSQL for the parameters it
//!   names (env `WANTED`) and completes once they are live; here, once the settled parameters hold them.

use serde_json::{Value, json};

use crate::server::Simulator;

/// Label on the pod template of the agent's PostgreSQL configuration verification Job.
pub(crate) const VERIFIES_LABEL: &str = "cp.example.com/configuration-of";
const PODS: &str = "pods";
const CLAIMS: &str = "persistentvolumeclaims";
const JOBS: &str = "jobs.batch";

/// The instance pods of a settled Cluster, made or replaced to run its spec; pods beyond `instances` go.
pub(crate) fn sync_instances(
    store: &mut crate::store::Store,
    namespace: &str,
    cluster: &Value,
    failure: Option<&str>,
    expansion_refused: bool,
) {
    let Some(ty) = store.types().iter().find(|t| t.key() == PODS).cloned() else { return };
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let instances = cluster["spec"]["instances"].as_u64().unwrap_or(1);
    // Replicas first (here: the highest serials), the primary (serial 1) last.
    for serial in (1..=instances).rev() {
        let pod = format!("{name}-{serial}");
        data_volume(store, namespace, cluster, serial, expansion_refused);
        let spec = json!({
            "containers": [{"name": "postgres", "image": cluster["spec"]["imageName"],
                            "resources": cluster["spec"]["resources"],
                            "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}]}],
            "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": pod}}],
        });
        let pod_spec = spec.to_string();
        let status = crate::controllers::pod_status(&json!({"spec": spec}), failure, true);
        let outdated = store.get(&ty, namespace, &pod).is_some_and(|p| {
            p["metadata"]["annotations"]["cnpg.io/podSpec"].as_str() != Some(pod_spec.as_str())
        });
        if outdated {
            let _ = store.delete(&ty, namespace, &pod);
        }
        if store.get(&ty, namespace, &pod).is_none() {
            let role = if serial == 1 { "primary" } else { "replica" };
            let mut labels = json!({
                "cnpg.io/cluster": name, "cnpg.io/instanceName": pod, "cnpg.io/podRole": "instance",
                "cnpg.io/instanceRole": role, "role": role,
                "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": name,
                "app.kubernetes.io/component": "database", "app.kubernetes.io/managed-by": "cloudnative-pg",
            });
            crate::store::merge(&mut labels, &cluster["spec"]["inheritedMetadata"]["labels"]);
            let object = json!({
                "metadata": {"name": pod, "labels": labels,
                    "annotations": {"cnpg.io/nodeSerial": serial.to_string(), "cnpg.io/podSpec": pod_spec},
                    "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": name,
                                         "uid": cluster["metadata"]["uid"], "controller": true}]},
                "spec": spec,
            });
            if store.create(&ty, namespace, object).is_err() {
                continue;
            }
        }
        let _ = store.merge_patch(&ty, namespace, &pod, &json!({"status": status}), true);
    }
    let extra: Vec<String> = store
        .names(&ty, namespace)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&format!("{name}-"))
                .and_then(|serial| serial.parse::<u64>().ok())
                .is_some_and(|serial| serial > instances)
        })
        .collect();
    for pod in extra {
        let _ = store.delete(&ty, namespace, &pod);
    }
}

/// Gibibytes of a `<n>Gi` size (the only form the agent writes).
fn gib(size: &Value) -> Option<u64> {
    size.as_str()?.strip_suffix("Gi")?.parse().ok()
}

/// The data volume's claim of instance `serial`, made as CloudNativePG makes it
/// (`pkg/reconciler/persistentvolumeclaim/build.go`, `calculator.go` `pgDataCalculator`: named after the
/// instance, labels `cnpg.io/instanceName`, `cnpg.io/pvcRole: PG_DATA` and `app.kubernetes.io/*`, plus the
/// Cluster's inherited labels, owned by the Cluster), bound at its size; a claim smaller than
/// `spec.storage.size` has its request grown (`existing.go`, `reconcilePVCQuantity`; never shrunk), which
/// the simulated resizer then gives it (`controllers::resize`).
fn data_volume(
    store: &mut crate::store::Store,
    namespace: &str,
    cluster: &Value,
    serial: u64,
    expansion_refused: bool,
) {
    let Some(ty) = store.types().iter().find(|t| t.key() == CLAIMS).cloned() else { return };
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let claim = format!("{name}-{serial}");
    let size = &cluster["spec"]["storage"]["size"];
    match store.get(&ty, namespace, &claim) {
        Some(existing) => {
            let request = &existing["spec"]["resources"]["requests"]["storage"];
            // A storage class that cannot expand refuses the operator's patch as it refuses anyone's.
            if gib(size) > gib(request) && !expansion_refused {
                let grow = json!({"spec": {"resources": {"requests": {"storage": size}}}});
                let _ = store.merge_patch(&ty, namespace, &claim, &grow, false);
            }
        }
        None => {
            let mut labels = json!({
                "cnpg.io/instanceName": claim, "cnpg.io/pvcRole": "PG_DATA",
                "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/component": "database",
                "app.kubernetes.io/managed-by": "cloudnative-pg",
            });
            crate::store::merge(&mut labels, &cluster["spec"]["inheritedMetadata"]["labels"]);
            let object = json!({
                "metadata": {"name": claim, "labels": labels,
                    "annotations": {"cnpg.io/nodeSerial": serial.to_string(), "cnpg.io/pvcStatus": "ready"},
                    "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": name,
                                         "uid": cluster["metadata"]["uid"], "controller": true}]},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
            });
            if store.create(&ty, namespace, object).is_ok() {
                let bound = json!({"status": {"phase": "Bound", "capacity": {"storage": size}}});
                let _ = store.merge_patch(&ty, namespace, &claim, &bound, true);
            }
        }
    }
}

/// Records the parameters a settled Cluster's PostgreSQL runs.
pub(crate) fn settle_parameters(sim: &Simulator, namespace: &str, cluster: &Value) {
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let parameters = cluster["spec"]["postgresql"]["parameters"].clone();
    sim.inner
        .live_parameters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert((namespace.to_owned(), name), parameters);
}

fn env<'a>(job: &'a Value, name: &str) -> Option<&'a str> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// Whether `job` is the agent's verification Job.
pub(crate) fn is_verification(job: &Value) -> bool {
    job["spec"]["template"]["metadata"]["labels"][VERIFIES_LABEL].is_string()
}

/// Whether the PostgreSQL the verification Job connects to (`PGHOST` `<cluster>-rw`) runs every
/// parameter it wants.
fn parameters_live(sim: &Simulator, namespace: &str, job: &Value) -> bool {
    let cluster = env(job, "PGHOST").and_then(|h| h.strip_suffix("-rw")).unwrap_or_default();
    let wanted: Value = env(job, "WANTED").and_then(|w| serde_json::from_str(w).ok()).unwrap_or_default();
    let live = sim.inner.live_parameters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(running) = live.get(&(namespace.to_owned(), cluster.to_owned())) else { return false };
    wanted.as_object().is_some_and(|w| w.iter().all(|(k, v)| running[k] == *v))
}

/// Runs a verification Job: it completes once its parameters are live (asked again every ready delay, as
/// the Job's script asks every two seconds), or ends when the Job is gone.
pub(crate) async fn verify(sim: Simulator, namespace: String, name: String) {
    loop {
        tokio::time::sleep(sim.inner.options.ready_delay).await;
        let job = {
            let store = sim.store();
            let Some(ty) = store.types().iter().find(|t| t.key() == JOBS).cloned() else { return };
            store.get(&ty, &namespace, &name)
        };
        let Some(job) = job else { return };
        if !job["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        let fails =
            sim.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).job_fails(&name);
        if fails || parameters_live(&sim, &namespace, &job) {
            crate::controllers::finish_job(&sim, &namespace, &name, None);
            return;
        }
    }
}

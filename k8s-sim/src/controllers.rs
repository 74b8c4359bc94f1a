//! Simulated controllers: StatefulSets and CloudNativePG clusters become ready a configurable delay after
//! each change, unless a fault says otherwise, which shows where Kubernetes shows it: in the container
//! statuses of the set's pods, and in CloudNativePG's phase and Ready condition. A StatefulSet's claims are created from its
//! volumeClaimTemplates (`<template>-<set>-<ordinal>`, labelled with the set's selector, never deleted,
//! as with the default retention policy), and a claim whose request grew is resized. Jobs complete (or
//! fail, when a fault says so) after the same delay. For each `Cluster`, CloudNativePG's application
//! Secret is made, and the version of it the operator has seen is reported in the Cluster's status.

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::server::Simulator;

const STATEFULSETS: &str = "statefulsets.apps";
const CNPG_CLUSTERS: &str = "clusters.postgresql.cnpg.io";
const CLAIMS: &str = "persistentvolumeclaims";
const PODS: &str = "pods";
const JOBS: &str = "jobs.batch";
/// Label of the agent's backup Jobs (cluster-agent `render::backup`).
const BACKUP_LABEL: &str = "cp.example.com/backup-id";
/// Label of the pods of the agent's restore Jobs.
const RESTORE_LABEL: &str = "cp.example.com/restore-of";
const SECRETS: &str = "secrets";
const CNPG_BACKUPS: &str = "backups.postgresql.cnpg.io";

pub(crate) fn spawn(sim: Simulator) {
    let mut changes = sim.inner.changes.subscribe();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(change)
                    if change.kind != "DELETED"
                        && [STATEFULSETS, CNPG_CLUSTERS].contains(&change.resource.as_str()) =>
                {
                    let name = change.value()["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    settle(&sim, &change.resource, &change.namespace, &name, false);
                    if change.resource == CNPG_CLUSTERS {
                        crate::roles::reconcile(&sim, &change.namespace, &name);
                    }
                    schedule(sim.clone(), change.resource, change.namespace, name);
                }
                Ok(change) if change.kind != "DELETED" && change.resource == CLAIMS => {
                    resize(&sim, &change.namespace, &change.value());
                }
                Ok(change)
                    if change.kind != "DELETED"
                        && change.resource == JOBS
                        && change.value()["status"]["conditions"].is_null() =>
                {
                    let name = change.value()["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    let sim = sim.clone();
                    if crate::cnpg::is_verification(&change.value()) {
                        tokio::spawn(crate::cnpg::verify(sim, change.namespace.clone(), name));
                        continue;
                    }
                    tokio::spawn(async move {
                        tokio::time::sleep(sim.inner.options.ready_delay).await;
                        // A backup Job's work is real: the artifact goes to the object store.
                        let job = &change.value();
                        let uploaded = if job["metadata"]["labels"][BACKUP_LABEL].is_string() {
                            Some(crate::backup_job::run(&sim, &change.namespace, job).await)
                        } else if job["spec"]["template"]["metadata"]["labels"][RESTORE_LABEL].is_string() {
                            // A restore's download is real too: it fails when the object is not there.
                            Some(crate::backup_job::download(&sim, &change.namespace, job).await)
                        } else {
                            None
                        };
                        finish_job(&sim, &change.namespace, &name, uploaded);
                    });
                }
                Ok(change)
                    if change.kind != "DELETED"
                        && change.resource == CNPG_BACKUPS
                        && change.value()["status"]["phase"].is_null() =>
                {
                    let sim = sim.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(sim.inner.options.ready_delay).await;
                        let name = change.value()["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                        let fails = sim
                            .inner
                            .faults
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .job_fails(&name);
                        let status =
                            crate::barman::run(&sim, &change.namespace, &change.value(), fails).await;
                        let mut store = sim.store();
                        if let Some(ty) = store.types().iter().find(|t| t.key() == CNPG_BACKUPS).cloned() {
                            let patch = json!({"status": status});
                            let _ = store.merge_patch(&ty, &change.namespace, &name, &patch, true);
                        }
                    });
                }
                Ok(change)
                    if change.kind != "DELETED"
                        && change.resource == SECRETS
                        && change.labels.get("cnpg.io/userType").is_some_and(|t| t == "app") =>
                {
                    report_app_secret_version(&sim, &change.namespace, &change.value());
                }
                Ok(change)
                    if change.kind != "DELETED"
                        && change.resource == SECRETS
                        && change.labels.contains_key(crate::roles::USER_LABEL) =>
                {
                    crate::roles::secret_changed(&sim, &change.namespace, &change.value());
                }
                Ok(change)
                    if change.kind != "DELETED" && change.resource == crate::load_balancer::SERVICES =>
                {
                    let name = change.value()["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    crate::load_balancer::sync(&sim, &change.namespace, &name);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => resync(&sim),
                Err(RecvError::Closed) => return,
            }
        }
    });
}

fn schedule(sim: Simulator, resource: String, namespace: String, name: String) {
    tokio::spawn(async move {
        tokio::time::sleep(sim.inner.options.ready_delay).await;
        // A `restore` init container's download is real: the pods do not start without the object.
        if resource == STATEFULSETS {
            let set = {
                let store = sim.store();
                store
                    .types()
                    .iter()
                    .find(|t| t.key() == STATEFULSETS)
                    .and_then(|ty| store.get(ty, &namespace, &name))
            };
            let restores = set
                .as_ref()
                .and_then(|s| s["spec"]["template"]["spec"]["initContainers"].as_array())
                .is_some_and(|c| c.iter().any(|c| c["name"] == "restore"));
            let failed = match (&set, restores) {
                (Some(set), true) => crate::backup_job::restore_init(&sim, &namespace, set).await.is_err(),
                _ => false,
            };
            let mut failures =
                sim.inner.init_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if failed {
                failures.insert((namespace.clone(), name.clone()));
            } else {
                failures.remove(&(namespace.clone(), name.clone()));
            }
        }
        settle(&sim, &resource, &namespace, &name, true);
    });
}

/// Re-evaluates every workload (after faults change).
pub(crate) fn resync(sim: &Simulator) {
    let targets: Vec<(String, String, String)> = {
        let store = sim.store();
        let mut targets = Vec::new();
        for resource in [STATEFULSETS, CNPG_CLUSTERS] {
            if let Some(ty) = store.types().iter().find(|t| t.key() == resource) {
                for o in store.list(ty, None, None) {
                    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
                    let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    targets.push((resource.to_owned(), ns, name));
                }
            }
        }
        targets
    };
    for (resource, namespace, name) in targets {
        schedule(sim.clone(), resource, namespace, name);
    }
}

fn desired_status(resource: &str, object: &Value, failure: Option<&str>, settled: bool) -> Value {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if resource == STATEFULSETS {
        // As apps/v1 StatefulSetStatus: replica counts only. Why pods do not run is in the pods' container
        // statuses (see `pod_status`), never in a condition of the set.
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = if settled && failure.is_none() { replicas } else { 0 };
        json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
               "currentReplicas": replicas, "updatedReplicas": if settled { replicas } else { 0 },
               "currentRevision": format!("{name}-{generation}"), "updateRevision": format!("{name}-{generation}")})
    } else {
        // As CloudNativePG v1.30.0 reports it (api/v1/cluster_types.go, pkg/resources/status/transactions.go):
        // phase strings, a Ready condition that is True exactly in the healthy phase, no observedGeneration.
        let instances = object["spec"]["instances"].as_i64().unwrap_or(1);
        let ready = if settled && failure.is_none() { instances } else { 0 };
        let (phase, reason) = match (settled, failure) {
            (false, _) => ("Setting up primary", String::new()),
            (true, None) => ("Cluster in healthy state", String::new()),
            (true, Some(reason)) => {
                ("Cluster is unrecoverable and needs manual intervention", reason.to_owned())
            }
        };
        let condition = if phase == "Cluster in healthy state" {
            json!({"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready"})
        } else {
            json!({"type": "Ready", "status": "False", "reason": "ClusterIsNotReady", "message": "Cluster Is Not Ready"})
        };
        json!({"phase": phase, "phaseReason": reason, "instances": instances, "readyInstances": ready,
               "image": if settled { object["spec"]["imageName"].clone() } else { object["status"]["image"].clone() },
               "conditions": [condition],
               // reported by `report_app_secret_version`, kept as it is
               "secretsResourceVersion": object["status"]["secretsResourceVersion"]})
    }
}

/// A pod's status as the kubelet reports it: Running and Ready once settled; a failure in the container's
/// `waiting` state (`CrashLoopBackOff` while Running, `ImagePullBackOff` while Pending); before that
/// `ContainerCreating`.
pub(crate) fn pod_status(template: &Value, failure: Option<&str>, settled: bool) -> Value {
    let containers = template["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let (phase, state, ready) = match (settled, failure) {
        (true, None) => ("Running", json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}), true),
        (true, Some(reason)) => (
            if reason == "CrashLoopBackOff" { "Running" } else { "Pending" },
            json!({"waiting": {"reason": reason, "message": format!("simulated {reason}")}}),
            false,
        ),
        (false, _) => ("Pending", json!({"waiting": {"reason": "ContainerCreating"}}), false),
    };
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"], "ready": ready, "restartCount": 0, "state": state}))
        .collect();
    let flag = if ready { "True" } else { "False" };
    json!({"phase": phase, "containerStatuses": statuses,
           "conditions": [{"type": "Ready", "status": flag}, {"type": "ContainersReady", "status": flag}]})
}

/// The label naming the revision of the set's template a pod was made from (apps/v1
/// `ControllerRevisionHashLabelKey`).
const REVISION_LABEL: &str = "controller-revision-hash";

/// The set's pods, one per ordinal, owned by the set (so deleting it collects them), with the status
/// the kubelet would report; pods beyond `replicas` go.
fn sync_pods(
    store: &mut crate::store::Store,
    namespace: &str,
    set: &Value,
    failure: Option<&str>,
    settled: bool,
) {
    let Some(ty) = store.types().iter().find(|t| t.key() == PODS).cloned() else { return };
    let name = set["metadata"]["name"].as_str().unwrap_or_default();
    let replicas = set["spec"]["replicas"].as_u64().unwrap_or(1);
    let template = &set["spec"]["template"];
    let status = pod_status(template, failure, settled);
    let revision = {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        template.to_string().hash(&mut hasher);
        format!("{name}-{:x}", hasher.finish())
    };
    for ordinal in 0..replicas {
        let pod = format!("{name}-{ordinal}");
        // As the StatefulSet controller's rolling update does (k8s.io/kubernetes v1.36
        // pkg/controller/statefulset/stateful_set_control.go, stateful_set_utils.go): a settled change of
        // the pod template replaces each pod whose `controller-revision-hash` label names an older
        // revision, so the pods carry the template's metadata. A pod's own metadata edited later is not
        // a new revision.
        let outdated = store
            .get(&ty, namespace, &pod)
            .is_some_and(|p| p["metadata"]["labels"][REVISION_LABEL].as_str() != Some(revision.as_str()));
        if settled && outdated {
            let _ = store.delete(&ty, namespace, &pod);
        }
        if store.get(&ty, namespace, &pod).is_none() {
            // As the StatefulSet controller does: each claim template becomes a volume of the pod, bound to
            // the ordinal's claim `<template>-<set>-<ordinal>`.
            let mut spec = template["spec"].clone();
            let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
            for claim in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
                let template_name = claim["metadata"]["name"].as_str().unwrap_or("data");
                volumes.push(json!({"name": template_name,
                    "persistentVolumeClaim": {"claimName": format!("{template_name}-{name}-{ordinal}")}}));
            }
            spec["volumes"] = json!(volumes);
            let mut labels = template["metadata"]["labels"].clone();
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(REVISION_LABEL.into(), json!(revision));
            }
            let object = json!({"metadata": {"name": pod, "labels": labels,
                "annotations": template["metadata"]["annotations"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                                     "uid": set["metadata"]["uid"], "controller": true}]},
                "spec": spec});
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
                .and_then(|o| o.parse::<u64>().ok())
                .is_some_and(|o| o >= replicas)
        })
        .collect();
    for pod in extra {
        let _ = store.delete(&ty, namespace, &pod);
    }
}

fn settle(sim: &Simulator, resource: &str, namespace: &str, name: &str, settled: bool) {
    let (failure, expansion_refused, held) = {
        let faults = sim.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (faults.workload_failure(name), faults.volume_expansion_refused, faults.cnpg_holds(name))
    };
    let init_failed = sim
        .inner
        .init_failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&(namespace.to_owned(), name.to_owned()));
    let failure = failure.or(init_failed.then_some("CrashLoopBackOff"));
    let mut store = sim.store();
    let Some(ty) = store.types().iter().find(|t| t.key() == resource).cloned() else { return };
    let Some(object) = store.get(&ty, namespace, name) else { return };
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    // CloudNativePG writes a Cluster's status from its own reconciliation (`RegisterPhase`,
    // `pkg/resources/status/patch.go` `PatchWithOptimisticLock`, which writes nothing when the status is
    // unchanged): until it has processed a change, the status it wrote before, a `Ready=True` included,
    // stands. Held, it processes nothing; before the delay, nothing either once it has settled once.
    if resource == CNPG_CLUSTERS {
        let ready = object["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if held || (!settled && ready) {
            return;
        }
    }
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let current = &object["status"];
    // Before the delay, only mark a new generation as in progress; never undo a settled status of it.
    // (CloudNativePG reports no observedGeneration, so the simulator remembers what it settled.)
    let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
    let mut settled_generations = sim.inner.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !settled && settled_generations.get(&key) == Some(&generation) {
        return;
    }
    if settled {
        settled_generations.insert(key, generation);
    }
    drop(settled_generations);
    let status = desired_status(resource, &object, failure, settled);
    if *current != status {
        let _ = store.merge_patch(&ty, namespace, name, &json!({"status": status}), true);
    }
    if resource == STATEFULSETS {
        create_claims(&mut store, namespace, &object);
        sync_pods(&mut store, namespace, &object, failure, settled);
    }
    if resource == CNPG_CLUSTERS {
        create_app_secret(&mut store, namespace, &object);
        if settled {
            crate::cnpg::sync_instances(&mut store, namespace, &object, failure, expansion_refused);
            drop(store);
            crate::cnpg::settle_parameters(sim, namespace, &object);
        }
    }
}

/// Ends a Job as the Job controller does once its pod exits: `Complete` (after `SuccessCriteriaMet`) with
/// `succeeded: 1`, or `Failed` with reason `BackoffLimitExceeded` (batch/v1 JobStatus, Kubernetes 1.31+).
pub(crate) fn finish_job(
    sim: &Simulator,
    namespace: &str,
    name: &str,
    uploaded: Option<Result<String, String>>,
) {
    let fails = sim.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).job_fails(name);
    let mut store = sim.store();
    let Some(ty) = store.types().iter().find(|t| t.key() == JOBS).cloned() else { return };
    let Some(job) = store.get(&ty, namespace, name) else { return };
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let upload_failure = uploaded.as_ref().and_then(|u| u.as_ref().err().cloned());
    let status = if fails || upload_failure.is_some() {
        let message = upload_failure.unwrap_or_else(|| "Job has reached the specified backoff limit".into());
        json!({"failed": 3, "startTime": now, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": message},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message}]})
    } else {
        if let Some(Ok(message)) = &uploaded {
            crate::backup_job::completed_pod(&mut store, namespace, &job, message);
        }
        crate::token_job::hand_over(&mut store, namespace, &job);
        json!({"succeeded": 1, "startTime": now, "completionTime": now, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]})
    };
    let _ = store.merge_patch(&ty, namespace, name, &json!({"status": status}), true);
}

/// Makes CloudNativePG's application Secret for a new Cluster, as the operator does
/// (cloudnative-pg v1.30 `internal/controller/cluster_create.go`, `reconcileAppUserSecret` →
/// `pkg/specs/secrets.go` `CreateSecret`): `<cluster>-app`, of type `kubernetes.io/basic-auth`, owned by
/// the Cluster, for user and database `app` on the `<cluster>-rw` service, with a generated password.
fn create_app_secret(store: &mut crate::store::Store, namespace: &str, cluster: &Value) {
    let Some(ty) = store.types().iter().find(|t| t.key() == SECRETS).cloned() else { return };
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let secret = format!("{name}-app");
    if store.get(&ty, namespace, &secret).is_some() {
        return;
    }
    // 64 letters and digits, as `password.Generate(64, 10, 0, false, true)`.
    let password = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let host = format!("{name}-rw");
    let (user, db, port) = ("app", "app", 5432);
    let object = json!({
        "metadata": {"name": secret,
            "labels": {"cnpg.io/userType": "app", "cnpg.io/reload": "true", "cnpg.io/cluster": name},
            "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": name,
                                 "uid": cluster["metadata"]["uid"], "controller": true}]},
        "type": "kubernetes.io/basic-auth",
        "stringData": {
            "username": user, "user": user, "password": password, "dbname": db, "host": host,
            "port": port.to_string(),
            "pgpass": format!("{host}:{port}:{db}:{user}:{password}\n"),
            "uri": format!("postgresql://{user}:{password}@{host}.{namespace}:{port}/{db}"),
        },
    });
    let _ = store.create(&ty, namespace, object);
}

/// Reports, in the owning Cluster's status, the resource version of the application Secret the operator
/// has seen (`status.secretsResourceVersion.applicationSecretVersion`, cloudnative-pg v1.30
/// `internal/controller/cluster_status.go`, `refreshSecretResourceVersions`).
fn report_app_secret_version(sim: &Simulator, namespace: &str, secret: &Value) {
    let Some(cluster) = secret["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["kind"] == "Cluster")
        .and_then(|o| o["name"].as_str())
    else {
        return;
    };
    let mut store = sim.store();
    let Some(ty) = store.types().iter().find(|t| t.key() == CNPG_CLUSTERS).cloned() else { return };
    let version = &secret["metadata"]["resourceVersion"];
    let Some(current) = store.get(&ty, namespace, cluster) else { return };
    if current["status"]["secretsResourceVersion"]["applicationSecretVersion"] == *version {
        return;
    }
    let patch = json!({"status": {"secretsResourceVersion": {"applicationSecretVersion": version}}});
    let _ = store.merge_patch(&ty, namespace, cluster, &patch, true);
}

/// Creates the claims of every replica that has none yet, bound at their requested size.
fn create_claims(store: &mut crate::store::Store, namespace: &str, set: &Value) {
    let Some(ty) = store.types().iter().find(|t| t.key() == CLAIMS).cloned() else { return };
    let name = set["metadata"]["name"].as_str().unwrap_or_default();
    let replicas = set["spec"]["replicas"].as_u64().unwrap_or(1);
    for template in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        crate::store::merge(&mut labels, &set["spec"]["selector"]["matchLabels"]);
        // With `whenDeleted: Delete` the set owns its claims, so garbage collection removes them with it.
        let owners = if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
            json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": set["metadata"]["uid"]}])
        } else {
            json!([])
        };
        for ordinal in 0..replicas {
            let claim =
                format!("{}-{name}-{ordinal}", template["metadata"]["name"].as_str().unwrap_or("data"));
            if store.get(&ty, namespace, &claim).is_some() {
                continue;
            }
            let object = json!({"metadata": {"name": claim, "labels": labels, "ownerReferences": owners},
                "spec": template["spec"]});
            if store.create(&ty, namespace, object).is_ok() {
                let status = json!({"status": {"phase": "Bound", "capacity": template["spec"]["resources"]["requests"]}});
                let _ = store.merge_patch(&ty, namespace, &claim, &status, true);
            }
        }
    }
}

/// The volume expander: a claim whose request exceeds its capacity gets that capacity.
fn resize(sim: &Simulator, namespace: &str, claim: &Value) {
    let request = &claim["spec"]["resources"]["requests"]["storage"];
    if claim["status"]["phase"] != "Bound" || claim["status"]["capacity"]["storage"] == *request {
        return;
    }
    let mut store = sim.store();
    let Some(ty) = store.types().iter().find(|t| t.key() == CLAIMS).cloned() else { return };
    let name = claim["metadata"]["name"].as_str().unwrap_or_default();
    let status = json!({"status": {"capacity": {"storage": request}}});
    let _ = store.merge_patch(&ty, namespace, name, &status, true);
}

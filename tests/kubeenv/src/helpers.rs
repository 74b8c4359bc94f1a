//! Test-side stand-ins for what a real cluster runs besides the control plane: a volume provisioner and
//! resizer for the default StorageClass (a CSI driver's external-provisioner and external-resizer), and
//! the CloudNativePG operator's instances and status ([`crate::cnpg`]), and its Barman Cloud plugin's
//! base backups and recovery (made by the real PostgreSQL and Barman, [`crate::barman`]), and a cloud's
//! load-balancer controller ([`crate::load_balancer`]).

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::{Value, json};

/// The provisioner named by the default StorageClass (`tests/kube-control-plane/manifests.yaml`).
pub const PROVISIONER: &str = "test.cp.example.com/fake";

/// CloudNativePG's `Cluster` resource.
pub fn cnpg_cluster_resource() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".into(),
        version: "v1".into(),
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Cluster".into(),
        plural: "clusters".into(),
    }
}

pub(crate) fn spawn_all(
    admin: Client,
    postgres: std::sync::Arc<crate::barman::Servers>,
    cnpg: std::sync::Arc<crate::cnpg::Cnpg>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(provision_volumes(admin.clone())),
        tokio::spawn(crate::cnpg::run(admin.clone(), cnpg, postgres.clone())),
        tokio::spawn(take_cnpg_backups(admin.clone(), postgres)),
        tokio::spawn(crate::roles::run(admin.clone())),
        tokio::spawn(crate::load_balancer::publish_load_balancers(admin)),
    ]
}

/// Plays a CSI driver's external-provisioner and external-resizer: a claim the scheduler has placed on a
/// node gets a volume of the requested size, pre-bound to it (the PV controller completes the binding);
/// a bound claim whose request grew gets the new capacity on its volume and in its status.
async fn provision_volumes(admin: Client) {
    let claims: Api<PersistentVolumeClaim> = Api::all(admin.clone());
    let volumes: Api<PersistentVolume> = Api::all(admin.clone());
    let mut events = watcher(claims, watcher::Config::default()).default_backoff().applied_objects().boxed();
    // A watch error is retried with backoff by the stream itself; only its end stops the helper.
    while let Some(claim) = events.next().await {
        let Ok(claim) = claim else { continue };
        let annotations = claim.annotations();
        let ours = annotations.get("volume.kubernetes.io/storage-provisioner").map(String::as_str)
            == Some(PROVISIONER);
        let spec = claim.spec.clone().unwrap_or_default();
        let request = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let namespace = claim.namespace().unwrap_or_default();
        let uid = claim.uid().unwrap_or_default();
        if ours
            && spec.volume_name.is_none()
            && annotations.contains_key("volume.kubernetes.io/selected-node")
        {
            let volume: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": format!("pvc-{uid}"),
                             "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": request},
                    "accessModes": spec.access_modes,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.storage_class_name,
                    "hostPath": {"path": format!("/tmp/cp-test-volumes/{uid}")},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                                 "name": claim.name_any(), "uid": uid},
                },
            }))
            .expect("a valid PersistentVolume");
            match volumes.create(&PostParams::default(), &volume).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => tracing::warn!(error = %e, "provisioning a volume failed"),
            }
            continue;
        }
        let capacity = claim
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone());
        let (Some(volume), Some(capacity)) = (spec.volume_name.as_deref(), capacity) else { continue };
        // A claim's request can only grow (the API server refuses to shrink it), and both sides are in the
        // server's canonical form: a different request is a larger one.
        if request == capacity {
            continue;
        }
        let grown = json!({"spec": {"capacity": {"storage": request}}});
        let result = async {
            volumes.patch(volume, &PatchParams::default(), &Patch::Merge(&grown)).await?;
            let status = json!({"status": {"capacity": {"storage": request}}});
            Api::<PersistentVolumeClaim>::namespaced(admin.clone(), &namespace)
                .patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "resizing a volume failed");
        }
    }
}

/// The status CloudNativePG's operator reports for a Cluster that is running every instance it asks for.
///
/// Upstream: github.com/cloudnative-pg/cloudnative-pg v1.30.0, `api/v1/cluster_types.go` (`ClusterStatus`:
/// `instances`, `readyInstances`, `phase`, `phaseReason`, `image`, `conditions`; phase constants such as
/// `PhaseHealthy = "Cluster in healthy state"`; `ConditionClusterReady = "Ready"` with reason
/// `ClusterIsReady`) and `pkg/resources/status/transactions.go` (`SetClusterReadyCondition`: Ready is
/// True exactly when the phase is `PhaseHealthy`, message "Cluster is Ready"). CloudNativePG reports no
/// `observedGeneration` for a Cluster, and neither does this.
pub fn healthy_cnpg_status(cluster: &Value) -> Value {
    let instances = cluster["spec"]["instances"].as_i64().unwrap_or(1);
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let since = cluster["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({
        "instances": instances,
        "readyInstances": instances,
        "phase": "Cluster in healthy state",
        "phaseReason": "",
        "image": cluster["spec"]["imageName"],
        "currentPrimary": format!("{name}-1"),
        "targetPrimary": format!("{name}-1"),
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                        "message": "Cluster is Ready", "lastTransitionTime": since}],
    })
}

/// Plays CloudNativePG with the Barman Cloud plugin (v0.14.0) for each new `Backup` with `method: plugin`:
/// `barman-cloud-backup` of the Cluster's real PostgreSQL to the store its WAL archiver `ObjectStore`
/// names, with the keys of the Secret it refers to ([`crate::barman`]), and the `Backup`'s status is what
/// CloudNativePG reports (v1.30.0 `api/v1/backup_types.go`, `BackupStatus`), read from Barman's catalogue.
async fn take_cnpg_backups(admin: Client, postgres: std::sync::Arc<crate::barman::Servers>) {
    let resource = ApiResource {
        group: "postgresql.cnpg.io".into(),
        version: "v1".into(),
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Backup".into(),
        plural: "backups".into(),
    };
    let backups: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
    let mut events = watcher(backups, watcher::Config::default()).default_backoff().applied_objects().boxed();
    // A Backup is taken once: the watch may show it again before its status is written.
    let mut taken = std::collections::HashSet::new();
    while let Some(backup) = events.next().await {
        let Ok(backup) = backup else { continue };
        let object = serde_json::to_value(&backup).unwrap_or_default();
        if !object["status"]["phase"].is_null()
            || object["spec"]["method"] != "plugin"
            || !taken.insert(backup.uid().unwrap_or_default())
        {
            continue;
        }
        let namespace = backup.namespace().unwrap_or_default();
        let status = match postgres.take(&admin, &namespace, &object).await {
            Ok(status) => status,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "a base backup failed");
                json!({"phase": "failed", "method": "plugin", "error": format!("{error:#}")})
            }
        };
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &namespace, &resource);
        let patch = json!({"status": status});
        if let Err(e) =
            api.patch_status(&backup.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            tracing::warn!(error = %e, "writing a CloudNativePG Backup status failed");
        }
    }
}

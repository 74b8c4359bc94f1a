//! When a CloudNativePG `Cluster` runs its spec. CloudNativePG v1.30.0 reports no observed generation
//! (`api/v1/cluster_types.go`, `ClusterStatus`; `SetClusterReadyCondition` in
//! `pkg/resources/status/transactions.go` builds its condition without one), so right after the agent
//! applies a new spec the old `Ready=True` still stands. Each part of the spec is therefore read where it
//! takes effect (ARCHITECTURE.md, *Readiness and failures where Kubernetes reports them*):
//!
//! - the image and the resources from the instance pods themselves. CloudNativePG rolls a pod whose spec
//!   differs from the one the Cluster asks for by deleting it and making it again under the same name,
//!   replicas first, the primary last (`internal/controller/cluster_upgrade.go`,
//!   `rolloutRequiredInstances`, `checkPodSpecIsOutdated`, `checkPodImageIsOutdated`, `upgradePod`), so a
//!   pod whose `postgres` container has the wanted image and resources runs them;
//! - the storage from the data volumes' claims ([`storage_current`]);
//! - the parameters from the running PostgreSQL, asked by the verification Job
//!   (`render::pg_settings`): the instance manager reloads or the operator restarts without any status
//!   of its own saying so.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt as _;
use serde_json::Value;

use crate::{crd::ManagedInstance, render};

/// Labels CloudNativePG puts on each instance pod (v1.30.0 `pkg/specs/pods.go`, `buildInstance`;
/// names in `pkg/utils/labels_annotations.go`: `ClusterLabelName`, `PodRoleLabelName`,
/// `PodRoleInstance`).
const CLUSTER_LABEL: &str = "cnpg.io/cluster";
const POD_ROLE_LABEL: &str = "cnpg.io/podRole";
const POD_ROLE_INSTANCE: &str = "instance";
/// The container running PostgreSQL in an instance pod (`pkg/specs/pods.go`, `PostgresContainerName`).
const POSTGRES_CONTAINER: &str = "postgres";
/// The role label of CloudNativePG's claims and the data volume's role (`pkg/utils/labels_annotations.go`:
/// `PvcRoleLabelName`, `PVCRolePgData`).
const PVC_ROLE_LABEL: &str = "cnpg.io/pvcRole";
const PVC_ROLE_DATA: &str = "PG_DATA";

/// CloudNativePG's `Ready` condition: True exactly in `PhaseHealthy` (`pkg/resources/status/transactions.go`).
fn ready(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every quantity `wanted` (`{requests: {...}, limits: {...}}`) names is in `have`, by value.
fn resources_hold(wanted: &Value, have: &Value) -> bool {
    ["requests", "limits"].iter().all(|part| {
        wanted[part].as_object().into_iter().flatten().all(|(resource, quantity)| {
            match (quantity.as_str(), have[part][resource].as_str()) {
                (Some(want), Some(has)) => render::quantities_equal(want, has),
                _ => false,
            }
        })
    })
}

/// Whether the instance pods of `cluster` run its spec: at least `instances` of them, none terminating,
/// each ready with the wanted image and resources in its `postgres` container.
pub(super) fn instances_current(cluster: &Value, pods: &[Arc<Pod>]) -> bool {
    let spec = &cluster["spec"];
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let instances: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|pod| {
            let labels = pod.labels();
            labels.get(CLUSTER_LABEL).map(String::as_str) == Some(name)
                && labels.get(POD_ROLE_LABEL).map(String::as_str) == Some(POD_ROLE_INSTANCE)
        })
        .collect();
    let wanted = spec["instances"].as_u64().unwrap_or(1);
    (instances.len() as u64) >= wanted
        && instances.iter().all(|pod| {
            let container =
                pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == POSTGRES_CONTAINER));
            let Some(container) = container else { return false };
            let resources = serde_json::to_value(&container.resources).unwrap_or_default();
            pod.metadata.deletion_timestamp.is_none()
                && pod_ready(pod)
                && container.image.as_deref() == spec["imageName"].as_str()
                && resources_hold(&spec["resources"], &resources)
        })
}

/// Whether every instance's data volume holds the wanted size: CloudNativePG makes one claim per instance
/// (`pkg/reconciler/persistentvolumeclaim/calculator.go`, `pgDataCalculator`: named after the instance,
/// label `cnpg.io/pvcRole: PG_DATA`; `build.go` adds the Cluster's inherited labels, so the agent's claim
/// watch has them) and grows its request to `spec.storage.size` (`existing.go`,
/// `reconcilePVCQuantity`); the volume is that large once the claim's `status.capacity` says so.
pub(super) fn storage_current(
    mi: &ManagedInstance,
    cluster: &Value,
    claims: &[Arc<PersistentVolumeClaim>],
) -> bool {
    let data: Vec<&Arc<PersistentVolumeClaim>> = claims
        .iter()
        .filter(|c| c.labels().get(PVC_ROLE_LABEL).map(String::as_str) == Some(PVC_ROLE_DATA))
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect();
    let wanted = cluster["spec"]["instances"].as_u64().unwrap_or(1);
    (data.len() as u64) >= wanted
        && data.iter().all(|claim| {
            let capacity =
                claim.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"));
            render::claim_is_expanded(mi, capacity.map(|q| q.0.as_str()))
        })
}

/// Whether the Cluster runs its spec, as far as Kubernetes shows it: Ready, the operator has taken the
/// image and instance count (`status.image`, `status.instances`), the instance pods run them, and the
/// data volumes have the wanted size.
pub(super) fn rolled_out(
    mi: &ManagedInstance,
    cluster: &Value,
    pods: &[Arc<Pod>],
    claims: &[Arc<PersistentVolumeClaim>],
) -> bool {
    let (spec, status) = (&cluster["spec"], &cluster["status"]);
    ready(status)
        && status["image"] == spec["imageName"]
        && status["instances"] == spec["instances"]
        && instances_current(cluster, pods)
        && storage_current(mi, cluster, claims)
}

/// What the agent keeps of a pod from its watch: its metadata and status, and of its spec only each
/// container's name, image and resources (what [`instances_current`] reads); the rest of the spec, the
/// larger half, is dropped.
pub(crate) fn keep_containers(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name,
                image: c.image,
                resources: c.resources,
                ..Default::default()
            })
            .collect();
        *spec = k8s_openapi::api::core::v1::PodSpec { containers, ..Default::default() };
    }
}

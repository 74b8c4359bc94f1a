//! What the cluster shows for an instance, read from the watch caches where Kubernetes and
//! CloudNativePG report it, and the ManagedInstance status written from it.

use chrono::{SecondsFormat, Utc};
use domain::observed::{Endpoint, ObservedNetwork, ObservedPhase, ObservedState};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use serde_json::Value;

use super::{Context, instance_uuid};
use crate::{
    crd::{AspectGenerations, Condition, ManagedInstance, ManagedInstanceStatus, UserStatus},
    render::{self, ChildKind, is_applied, network},
};

pub(super) mod cnpg;

fn int(v: &Value) -> u32 {
    v.as_u64().unwrap_or(0).try_into().unwrap_or(u32::MAX)
}

/// Why a container of the pod cannot run, as the kubelet reports it in the container's `waiting` state.
/// The reasons that no wait fixes, from k8s.io/kubernetes v1.36: `pkg/kubelet/container/sync_result.go`
/// (`CrashLoopBackOff`, `RunContainerError`), `pkg/kubelet/images/types.go` (`ImagePullBackOff`,
/// `ErrImagePull`, `InvalidImageName`) and `pkg/kubelet/kuberuntime/kuberuntime_container.go`
/// (`CreateContainerConfigError`, `CreateContainerError`). `ContainerCreating` and `PodInitializing`
/// are progress, not failures. StatefulSets carry no condition for any of this: their status only counts
/// ready replicas.
pub(super) fn pod_failure(pod: &Pod) -> Option<String> {
    const FAILURES: [&str; 7] = [
        "CrashLoopBackOff",
        "RunContainerError",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    ];
    let status = pod.status.as_ref()?;
    let containers =
        status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    containers
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|reason| FAILURES.contains(&reason.as_str()))
}

/// CloudNativePG's reading of a `Cluster`, from github.com/cloudnative-pg/cloudnative-pg v1.30.0
/// `api/v1/cluster_types.go` and `pkg/resources/status/transactions.go`: the `Ready` condition is True
/// exactly when `phase` is `PhaseHealthy`; phases that need someone's intervention are failures (there is
/// no phase called `Failed`); every other phase is progress. CloudNativePG reports no observed
/// generation: when the spec runs is read elsewhere ([`cnpg`]).
fn cnpg_failure(status: &Value) -> Option<String> {
    let phase = status["phase"].as_str().unwrap_or_default();
    let reason = match phase {
        "Cluster is unrecoverable and needs manual intervention" => "Unrecoverable",
        "Unable to create required cluster objects" => "CannotCreateClusterObjects",
        "Invalid cluster definition" => "InvalidClusterDefinition",
        "Cluster has incomplete or invalid image catalog" => "ImageCatalogError",
        "Cluster cannot proceed to reconciliation due to an unknown plugin being required" => "UnknownPlugin",
        "Cluster cannot proceed to reconciliation due to an error while interacting with plugins" => {
            "PluginFailure"
        }
        "Cluster cannot execute instance online upgrade due to missing architecture binary" => {
            "ArchitectureBinaryMissing"
        }
        "Waiting for user action" => "WaitingForUserAction",
        _ => return None,
    };
    Some(reason.to_owned())
}

/// The configuration the instance's ready pods run: the [`render::CONFIG_HASH_ANNOTATION`] their pod
/// template gave them (a pod keeps the metadata it was made with; the StatefulSet controller replaces a pod
/// of an older template, k8s.io/kubernetes v1.36 pkg/controller/statefulset/stateful_set_control.go).
/// `None` while no pod is ready or the ready ones disagree (a rollout under way).
fn running_config_hash(pods: &[std::sync::Arc<Pod>]) -> Option<String> {
    let ready = pods.iter().filter(|pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    let mut hashes = ready.map(|pod| pod.annotations().get(render::CONFIG_HASH_ANNOTATION).cloned());
    let first = hashes.next()??;
    hashes.all(|h| h.as_deref() == Some(first.as_str())).then_some(first)
}

/// What the cluster shows for the instance, from the watch caches.
#[allow(clippy::too_many_arguments)]
pub(super) fn observe(
    mi: &ManagedInstance,
    ctx: &Context,
    desired: &[render::Child],
    rendered: std::collections::BTreeMap<String, String>,
    storage_failure: Option<String>,
    rotation: &super::rotation::Rotation,
    restore: &super::restore::Restore,
    users: &crate::users::Users,
) -> ObservedState {
    let namespace = mi.namespace().unwrap_or_default();
    let mut all_applied = true;
    // Network access is applied once its objects are: nothing rolls out for it.
    let mut network_applied = true;
    let mut ready_replicas = 0;
    let mut rolled_out = true;
    let mut reason = storage_failure
        .or_else(|| rotation.failure.clone())
        .or_else(|| restore.failure.clone())
        .or_else(|| users.failure.clone());
    if render::expands_claims(mi) {
        // Storage is there once every replica's claim holds the wanted size.
        let expanded = ctx
            .claims(&namespace, &mi.spec.instance_id)
            .iter()
            .filter(|c| {
                let capacity =
                    c.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"));
                render::claim_is_expanded(mi, capacity.map(|q| q.0.as_str()))
            })
            .count();
        rolled_out &= expanded >= mi.spec.replicas as usize;
    }
    let endpoint_name = network::endpoint_name(mi);
    let is_network = |child: &render::Child| {
        child.kind == ChildKind::NetworkPolicy
            || (child.kind == ChildKind::Service && child.name == endpoint_name)
    };
    // An endpoint left from a non-empty ACL admits everyone's blocks but the new ones until it is gone.
    if mi.spec.acl.is_empty() && ctx.current(ChildKind::Service, &namespace, &endpoint_name).is_some() {
        network_applied = false;
    }
    let mut acl = None;
    let mut endpoint = None;
    // The configuration the running objects carry, as the cluster shows them (never the desired one
    // copied): the ready pods' for a StatefulSet, the Cluster's as observed for CloudNativePG, which
    // writes its spec's parameters into every instance's configuration itself.
    let mut running_hash = None;
    for child in desired {
        let Some(current) = ctx.current(child.kind, &namespace, &child.name) else {
            all_applied = false;
            network_applied &= !is_network(child);
            continue;
        };
        if !is_applied(&child.object, &current) {
            tracing::debug!(kind = child.kind.kind(), name = %child.name, "not applied yet");
            all_applied = false;
            network_applied &= !is_network(child);
        }
        let status = &current["status"];
        let generation = current["metadata"]["generation"].as_u64();
        match child.kind {
            ChildKind::StatefulSet => {
                ready_replicas = int(&status["readyReplicas"]);
                rolled_out &= status["observedGeneration"].as_u64() == generation
                    && int(&status["updatedReplicas"]) >= mi.spec.replicas;
                let pods = ctx.pods(&namespace, &mi.spec.instance_id);
                running_hash = running_config_hash(&pods);
                reason = reason.or_else(|| pods.iter().find_map(|pod| pod_failure(pod)));
            }
            // The old `Ready=True` stands right after a change: what runs is read from the instance pods,
            // their claims and, for the parameters, the verification Job (`observe/cnpg.rs`).
            ChildKind::PostgresCluster => {
                ready_replicas = int(&status["readyInstances"]);
                let (pods, claims) = (
                    ctx.pods(&namespace, &mi.spec.instance_id),
                    ctx.claims(&namespace, &mi.spec.instance_id),
                );
                rolled_out &= cnpg::rolled_out(mi, &current, &pods, &claims);
                reason = reason.or_else(|| cnpg_failure(status));
                if !desired.iter().any(render::pg_settings::is_verification_job) {
                    running_hash = current["metadata"]["annotations"][render::CONFIG_HASH_ANNOTATION]
                        .as_str()
                        .map(str::to_owned);
                }
            }
            // A PostgreSQL instance's parameters are live once its verification Job has completed.
            ChildKind::Job if render::pg_settings::is_verification_job(child) => {
                match render::job::outcome(&current) {
                    Some(Ok(())) => running_hash = Some(render::config_hash(&mi.spec.config)),
                    None => rolled_out = false,
                    Some(Err(why)) => {
                        reason = reason.or_else(|| Some(format!("ConfigurationNotApplied: {why}")))
                    }
                }
            }
            // A MongoDB replica set's initiation/membership Job: the instance is ready once it has
            // completed (the set has its members), failed once it failed for good.
            ChildKind::Job => match render::job::outcome(&current) {
                Some(Ok(())) => {}
                None => rolled_out = false,
                Some(Err(why)) => {
                    reason = reason.or_else(|| Some(format!("ReplicaSetConfigurationFailed: {why}")))
                }
            },
            ChildKind::NetworkPolicy => acl = Some(network::admitted_blocks(&current)),
            ChildKind::Service if child.name == endpoint_name => {
                endpoint = network::published_endpoint(&current);
            }
            _ => {}
        }
    }
    let desired_hash = render::config_hash(&mi.spec.config);
    rolled_out &= running_hash.as_deref() == Some(desired_hash.as_str());
    let previous = mi.status.clone().unwrap_or_default();
    // "At least" semantics: more ready replicas than desired is fine.
    let ready = all_applied && rolled_out && ready_replicas >= mi.spec.replicas && reason.is_none();
    tracing::debug!(all_applied, rolled_out, network_applied, ready_replicas, ?reason, ready, "observed");
    let phase = match (&reason, ready) {
        (Some(_), _) => ObservedPhase::Failed,
        (None, true) => ObservedPhase::Ready,
        (None, false) => ObservedPhase::Progressing,
    };
    // Each aspect is applied at the generation that last changed it once its part is in place: network
    // access once its objects are applied, the rest once the whole rollout is ready.
    let wanted = mi.spec.aspect_generations();
    let before = previous.applied.unwrap_or_default();
    let applied = AspectGenerations {
        version: if ready { wanted.version } else { before.version },
        resources: if ready { wanted.resources } else { before.resources },
        configuration: if ready { wanted.configuration } else { before.configuration },
        network_access: if network_applied { wanted.network_access } else { before.network_access },
        credentials: rotation.applied,
        restore: restore.applied,
        users: users.applied,
    };
    ObservedState {
        instance_id: instance_uuid(mi),
        observed_generation: if ready { Some(mi.spec.generation) } else { previous.observed_generation },
        desired_generation: mi.spec.generation,
        phase,
        ready_replicas,
        desired_replicas: mi.spec.replicas,
        running_version: if ready { Some(mi.spec.version.clone()) } else { previous.running_version },
        // What runs, once something runs: a configuration that never reached the pods is not reported.
        config: match &running_hash {
            Some(hash) if ready && *hash == desired_hash => Some(mi.spec.config.clone()),
            Some(hash) if previous.config_hash.as_ref() == Some(hash) => previous.config,
            Some(_) => None,
            None => previous.config,
        },
        config_hash: running_hash.or(previous.config_hash),
        reason,
        applied: Some(applied.into()),
        network: Some(ObservedNetwork {
            acl: acl.unwrap_or_default(),
            endpoint: endpoint.map(|(host, port)| Endpoint { host, port }),
        }),
        rendered: if ready { Some(rendered) } else { previous.rendered },
        users: users.observed.clone(),
    }
}

fn phase_name(phase: ObservedPhase) -> &'static str {
    match phase {
        ObservedPhase::Progressing => "Progressing",
        ObservedPhase::Ready => "Ready",
        ObservedPhase::Failed => "Failed",
    }
}

pub(super) fn status_of(mi: &ManagedInstance, observed: &ObservedState) -> ManagedInstanceStatus {
    let previous = mi.status.clone().unwrap_or_default();
    let (status, reason) = match observed.phase {
        ObservedPhase::Ready => ("True", "Ready".to_owned()),
        ObservedPhase::Progressing => ("False", "Progressing".to_owned()),
        ObservedPhase::Failed => ("False", observed.reason.clone().unwrap_or_else(|| "Failed".into())),
    };
    let old = previous.conditions.iter().find(|c| c.type_ == "Ready");
    // lastTransitionTime moves only when the status flips.
    let since = old
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    let message = match observed.phase {
        ObservedPhase::Ready => format!(
            "{} of {} replicas ready at generation {}",
            observed.ready_replicas, observed.desired_replicas, mi.spec.generation
        ),
        _ => format!(
            "{} of {} replicas ready; applying generation {}",
            observed.ready_replicas, observed.desired_replicas, mi.spec.generation
        ),
    };
    ManagedInstanceStatus {
        observed_generation: observed.observed_generation,
        phase: phase_name(observed.phase).to_owned(),
        ready_replicas: observed.ready_replicas,
        running_version: observed.running_version.clone(),
        config_hash: observed.config_hash.clone(),
        config: observed.config.clone(),
        reason: observed.reason.clone(),
        applied: observed.applied.map(AspectGenerations::from),
        acl: observed.network.as_ref().map(|n| n.acl.clone()),
        endpoint: observed
            .network
            .as_ref()
            .and_then(|n| n.endpoint.as_ref())
            .map(|e| format!("{}:{}", e.host, e.port)),
        rendered: observed.rendered.clone(),
        users: observed.users.as_ref().map(|users| {
            users
                .iter()
                .map(|u| UserStatus {
                    name: u.name.clone(),
                    generation: u.generation,
                    reason: u.reason.clone(),
                })
                .collect()
        }),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason,
            message,
            last_transition_time: since,
            observed_generation: mi.metadata.generation.unwrap_or_default(),
        }],
    }
}

pub(super) fn same_status(a: &ManagedInstanceStatus, b: &ManagedInstanceStatus) -> bool {
    let strip = |s: &ManagedInstanceStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time.clear();
            c.message.clear();
        }
        s
    };
    strip(a) == strip(b)
        && a.conditions.first().map(|c| &c.message) == b.conditions.first().map(|c| &c.message)
}

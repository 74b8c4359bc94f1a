//! The controller half: `ManagedInstance` → owned workload objects, conditions, observed-state events.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::{SecondsFormat, Utc};
use domain::observed::{OBSERVED_EVENT_VERSION, ObservedEvent, ObservedPhase, ObservedState};
use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt as _, ResourceExt as _,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{
        Controller, WatchStreamExt as _,
        controller::{self, Action},
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use rand::Rng as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    AgentConfig, Error, RETRY_AFTER, Result,
    crd::{Condition, FINALIZER, ManagedInstance, ManagedInstanceStatus},
    render::{self, ChildKind, INSTANCE_LABEL, MANAGED_SELECTOR, apply_params, is_applied},
};

/// The API resource of each child kind.
pub fn api_resource(kind: ChildKind) -> ApiResource {
    match kind {
        ChildKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        ChildKind::Service => ApiResource::erase::<Service>(&()),
        ChildKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
        ChildKind::Secret => ApiResource::erase::<Secret>(&()),
        ChildKind::PostgresCluster => ApiResource {
            group: "postgresql.cnpg.io".into(),
            version: "v1".into(),
            api_version: "postgresql.cnpg.io/v1".into(),
            kind: "Cluster".into(),
            plural: "clusters".into(),
        },
    }
}

const CHILD_KINDS: [ChildKind; 5] = [
    ChildKind::StatefulSet,
    ChildKind::Service,
    ChildKind::ConfigMap,
    ChildKind::Secret,
    ChildKind::PostgresCluster,
];

/// What reconciles share.
pub struct Context {
    config: Arc<AgentConfig>,
    stores: HashMap<ChildKind, Store<DynamicObject>>,
    /// responses of our own writes, newer than the watch caches until the watch catches up
    written: Mutex<HashMap<(ChildKind, String, String), Value>>,
    /// status last written per instance: the watch cache of ManagedInstances may not show it yet
    statuses: Mutex<HashMap<String, ManagedInstanceStatus>>,
    /// the StatefulSets' volume claims (not owned by the instance: the StatefulSet controller makes them)
    claims: Store<PersistentVolumeClaim>,
    /// size last requested per claim uid, so a reconcile ahead of the claim watch does not patch again
    requested: Mutex<HashMap<String, String>>,
    jetstream: async_nats::jetstream::Context,
}

fn resource_version(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Context {
    fn api(&self, kind: ChildKind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.config.client.clone(), namespace, &api_resource(kind))
    }

    /// The current object: the watch cache, or our own newer write.
    fn current(&self, kind: ChildKind, namespace: &str, name: &str) -> Option<Value> {
        let cached = self.stores[&kind]
            .get(&ObjectRef::new_with(name, api_resource(kind)).within(namespace))
            .and_then(|o| serde_json::to_value(o.as_ref()).ok());
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match (cached, written.get(&(kind, namespace.to_owned(), name.to_owned()))) {
            // Resource versions are opaque in general; on both the simulator and etcd they grow.
            (Some(c), Some(w)) if resource_version(w) > resource_version(&c) => Some(w.clone()),
            (cached, _) => cached,
        }
    }

    fn owned(&self, kind: ChildKind, instance_id: &str) -> Vec<Arc<DynamicObject>> {
        self.stores[&kind]
            .state()
            .into_iter()
            .filter(|o| o.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(instance_id))
            .collect()
    }

    /// The volume claims of an instance's StatefulSet (they carry its selector labels).
    fn claims(&self, namespace: &str, instance_id: &str) -> Vec<Arc<PersistentVolumeClaim>> {
        self.claims
            .state()
            .into_iter()
            .filter(|c| {
                c.namespace().as_deref() == Some(namespace)
                    && c.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(instance_id)
            })
            .collect()
    }

    fn remember(&self, kind: ChildKind, namespace: &str, name: &str, object: Option<Value>) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, namespace.to_owned(), name.to_owned());
        match object {
            Some(object) => written.insert(key, object),
            None => written.remove(&key),
        };
    }
}

/// Installs (or updates) the ManagedInstance CRD.
pub async fn install_crd(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ManagedInstance::crd();
    api.patch(&crd.name_any(), &apply_params(), &Patch::Apply(&crd)).await?;
    Ok(())
}

/// Runs the controller until cancelled.
pub async fn run(config: Arc<AgentConfig>) -> anyhow::Result<()> {
    let client = config.client.clone();
    let mut stores = HashMap::new();
    let mut triggers = Vec::new();
    for kind in CHILD_KINDS {
        let resource = api_resource(kind);
        let writer = reflector::store::Writer::new(resource.clone());
        stores.insert(kind, writer.as_reader());
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let stream =
            reflector::reflector(writer, watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR)))
                .default_backoff()
                .touched_objects();
        triggers.push((stream, resource));
    }
    // Claims made from volumeClaimTemplates carry the StatefulSet's selector, hence the instance label.
    let claims_writer = reflector::store::Writer::default();
    let claims = claims_writer.as_reader();
    let claim_events = reflector::reflector(
        claims_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default().labels(INSTANCE_LABEL),
        ),
    )
    .default_backoff()
    .touched_objects();
    let jetstream = async_nats::jetstream::new(config.nats.clone());
    let context = Arc::new(Context {
        config: config.clone(),
        stores,
        written: Mutex::default(),
        statuses: Mutex::default(),
        claims,
        requested: Mutex::default(),
        jetstream,
    });
    let mut controller = Controller::new(Api::<ManagedInstance>::all(client), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(config.concurrency));
    // Level-triggered safety net: re-check every instance periodically. Reconciles read the watch caches,
    // so a converged cluster sees no requests from it.
    let period = config.resync;
    let resync = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    });
    controller = controller.reconcile_all_on(resync);
    for (stream, resource) in triggers {
        // Triggers come from the reflected streams, so a reconcile always sees the change that caused it.
        controller = controller.owns_stream_with(stream, resource);
    }
    // A claim names its instance by the selector label the ManagedInstance's name is in.
    controller = controller.watches_stream(claim_events, |claim: PersistentVolumeClaim| {
        let instance = claim.labels().get("app.kubernetes.io/instance").cloned();
        instance.map(|name| ObjectRef::new(&name).within(&claim.namespace().unwrap_or_default()))
    });
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    Ok(())
}

fn error_policy(mi: Arc<ManagedInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Waiting(why) = error {
        tracing::debug!(instance = %mi.name_any(), why, "waiting");
        return Action::requeue(RETRY_AFTER);
    }
    ctx.config.metrics.reconcile_errors.inc();
    tracing::warn!(instance = %mi.name_any(), error = %error, kind = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER)
}

#[tracing::instrument(skip(mi, ctx), fields(instance = %mi.name_any(), namespace = mi.namespace().unwrap_or_default()))]
async fn reconcile(mi: Arc<ManagedInstance>, ctx: Arc<Context>) -> Result<Action> {
    ctx.config.metrics.reconciles.inc();
    let namespace = mi.namespace().unwrap_or_default();
    let api: Api<ManagedInstance> = Api::namespaced(ctx.config.client.clone(), &namespace);
    finalizer(&api, FINALIZER, mi, |event| async {
        match event {
            FinalizerEvent::Apply(mi) => apply(mi, &ctx).await,
            FinalizerEvent::Cleanup(mi) => cleanup(mi, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Makes the cluster hold exactly the objects `mi` renders to, and reports what it observes.
async fn apply(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    let namespace = mi.namespace().unwrap_or_default();
    let mut writes = 0u32;
    let mut desired = render::render(&mi);
    let mut healed = Vec::new();
    let instance_id = mi.spec.instance_id.clone();
    let instance_id = instance_id.as_str();
    let last = ctx
        .statuses
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(instance_id)
        .cloned()
        .or_else(|| mi.status.clone());
    let mi = if last != mi.status {
        // Observe against the status we last wrote, not the (older) one in the watch cache.
        let mut newer = (*mi).clone();
        newer.status = last.clone();
        Arc::new(newer)
    } else {
        mi
    };
    let converged = last.as_ref().and_then(|s| s.observed_generation) == Some(mi.spec.generation);
    for child in &mut desired {
        let current = ctx.current(child.kind, &namespace, &child.name);
        if let Some(current) = &current {
            render::keep_claim_templates(child, current);
        }
        if current.as_ref().is_some_and(|c| is_applied(&child.object, c)) {
            continue;
        }
        let written = ctx
            .api(child.kind, &namespace)
            .patch(&child.name, &apply_params(), &Patch::Apply(&child.object))
            .await?;
        writes += 1;
        ctx.remember(child.kind, &namespace, &child.name, Some(serde_json::to_value(&written)?));
        if converged && current.is_some() {
            healed.push(format!("{}/{}", child.kind.kind(), child.name));
        }
    }
    if let Some(secret) = render::credentials(&mi, "")
        && ctx.current(ChildKind::Secret, &namespace, &secret.name).is_none()
    {
        {
            let password: String =
                rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
            let secret = render::credentials(&mi, &password).expect("same service");
            let object: DynamicObject = serde_json::from_value(secret.object)?;
            match ctx.api(ChildKind::Secret, &namespace).create(&PostParams::default(), &object).await {
                Ok(created) => ctx.remember(
                    ChildKind::Secret,
                    &namespace,
                    &secret.name,
                    Some(serde_json::to_value(&created)?),
                ),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            writes += 1;
        }
    }
    // Prune what the instance no longer needs (for example after a change of service layout).
    for kind in CHILD_KINDS {
        for object in ctx.owned(kind, instance_id) {
            let name = object.name_any();
            let wanted = desired.iter().any(|c| c.kind == kind && c.name == name)
                || (kind == ChildKind::Secret
                    && name == render::credentials_name(&mi)
                    && mi.spec.service != "postgresql");
            if !wanted {
                delete(ctx, kind, &namespace, &name).await?;
                writes += 1;
            }
        }
    }
    let storage_failure = expand_claims(&mi, ctx, &namespace, &mut writes).await?;
    if !healed.is_empty() {
        tracing::warn!(objects = ?healed, "drift healed");
        publish(ctx, &mi, ObservedEvent::DriftHealed { instance_id: instance_uuid(&mi), objects: healed })
            .await?;
    }
    // A refused expansion is fixed outside our view (an admin allows expansion on the StorageClass), so
    // nothing will trigger the retry: poll, slowly.
    let next =
        if storage_failure.is_some() { Action::requeue(EXPANSION_RETRY) } else { Action::await_change() };
    let observed = observe(&mi, ctx, &desired, storage_failure);
    let status = status_of(&mi, &observed);
    if last.as_ref().is_none_or(|s| !same_status(s, &status)) {
        publish(ctx, &mi, ObservedEvent::InstanceObserved(observed)).await?;
        let api: Api<ManagedInstance> = Api::namespaced(ctx.config.client.clone(), &namespace);
        let patch =
            json!({"apiVersion": "cp.example.com/v1alpha1", "kind": "ManagedInstance", "status": status});
        api.patch_status(&mi.name_any(), &apply_params(), &Patch::Apply(&patch)).await?;
        ctx.statuses.lock().unwrap_or_else(PoisonError::into_inner).insert(instance_id.to_owned(), status);
        writes += 1;
    }
    ctx.config.metrics.requests_per_reconcile.observe(f64::from(writes));
    // Level-triggered: every change of the instance or of an owned object triggers a reconcile; nothing
    // needs polling, so an idle cluster sees no requests but the watches.
    Ok(next)
}

/// How soon a refused volume expansion is tried again.
const EXPANSION_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Grows the instance's volume claims to the size it wants (one merge patch per claim; the cluster's
/// volume expander does the rest). Returns why the cluster refused, if it did: a StorageClass without
/// `allowVolumeExpansion` answers 403/422, which no retry fixes, so it is reported, not retried.
async fn expand_claims(
    mi: &ManagedInstance,
    ctx: &Context,
    namespace: &str,
    writes: &mut u32,
) -> Result<Option<String>> {
    if !render::expands_claims(mi) {
        return Ok(None);
    }
    let size = render::claim_size(mi);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.config.client.clone(), namespace);
    for claim in ctx.claims(namespace, &mi.spec.instance_id) {
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str())
            .unwrap_or_default();
        let uid = claim.uid().unwrap_or_default();
        let already = ctx.requested.lock().unwrap_or_else(PoisonError::into_inner).get(&uid) == Some(&size);
        if already || !render::claim_needs_expansion(mi, requested) {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                *writes += 1;
                ctx.requested.lock().unwrap_or_else(PoisonError::into_inner).insert(uid, size.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                tracing::warn!(claim = %claim.name_any(), error = %e.message, "volume expansion refused");
                return Ok(Some("VolumeExpansionFailed".into()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

async fn delete(ctx: &Context, kind: ChildKind, namespace: &str, name: &str) -> Result<()> {
    match ctx.api(kind, namespace).delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.remember(kind, namespace, name, None);
    Ok(())
}

/// Deletes everything the instance owns; reports it gone once the watches show nothing left.
async fn cleanup(mi: Arc<ManagedInstance>, ctx: &Context) -> Result<Action> {
    let namespace = mi.namespace().unwrap_or_default();
    let mut remaining = 0;
    for kind in CHILD_KINDS {
        for object in ctx.owned(kind, &mi.spec.instance_id) {
            remaining += 1;
            if object.metadata.deletion_timestamp.is_none() {
                delete(ctx, kind, &namespace, &object.name_any()).await?;
            }
        }
    }
    // The data volumes go too. The StatefulSet's retention policy has the cluster delete them; a cluster
    // older than that keeps them, so once the set is gone (it would recreate them) they are deleted here.
    let set_gone = remaining == 0;
    for claim in ctx.claims(&namespace, &mi.spec.instance_id) {
        remaining += 1;
        ctx.requested.lock().unwrap_or_else(PoisonError::into_inner).remove(&claim.uid().unwrap_or_default());
        if set_gone && claim.metadata.deletion_timestamp.is_none() {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.config.client.clone(), &namespace);
            match api.delete(&claim.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        // Not Ok: the finalizer helper would remove the finalizer. The deletions' watch events trigger the
        // next cleanup; the error policy's requeue only guards a lost event.
        return Err(Error::Waiting(format!("{remaining} objects still present")));
    }
    publish(ctx, &mi, ObservedEvent::InstanceRemoved { instance_id: instance_uuid(&mi) }).await?;
    ctx.statuses.lock().unwrap_or_else(PoisonError::into_inner).remove(&mi.spec.instance_id);
    Ok(Action::await_change())
}

fn instance_uuid(mi: &ManagedInstance) -> Uuid {
    mi.spec.instance_id.parse().unwrap_or_default()
}

fn int(v: &Value) -> u32 {
    v.as_u64().unwrap_or(0).try_into().unwrap_or(u32::MAX)
}

/// What the cluster shows for the instance, from the watch caches.
fn observe(
    mi: &ManagedInstance,
    ctx: &Context,
    desired: &[render::Child],
    storage_failure: Option<String>,
) -> ObservedState {
    let namespace = mi.namespace().unwrap_or_default();
    let mut all_applied = true;
    let mut ready_replicas = 0;
    let mut rolled_out = true;
    let mut reason = storage_failure;
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
    for child in desired {
        let Some(current) = ctx.current(child.kind, &namespace, &child.name) else {
            all_applied = false;
            continue;
        };
        all_applied &= is_applied(&child.object, &current);
        let status = &current["status"];
        let generation = current["metadata"]["generation"].as_u64();
        match child.kind {
            ChildKind::StatefulSet => {
                ready_replicas = int(&status["readyReplicas"]);
                rolled_out &= status["observedGeneration"].as_u64() == generation
                    && int(&status["updatedReplicas"]) >= mi.spec.replicas;
                reason = reason.or(status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["status"] == "False")
                    .and_then(|c| c["reason"].as_str().map(str::to_owned)));
            }
            ChildKind::PostgresCluster => {
                ready_replicas = int(&status["readyInstances"]);
                rolled_out &= status["image"] == current["spec"]["imageName"]
                    && status["observedGeneration"].as_u64() == generation;
                if status["phase"] == "Failed" {
                    reason = status["phaseReason"]
                        .as_str()
                        .map(str::to_owned)
                        .filter(|r| !r.is_empty())
                        .or(Some("Failed".into()));
                }
            }
            _ => {}
        }
    }
    let previous = mi.status.clone().unwrap_or_default();
    // "At least" semantics: more ready replicas than desired is fine.
    let ready = all_applied && rolled_out && ready_replicas >= mi.spec.replicas && reason.is_none();
    let phase = match (&reason, ready) {
        (Some(_), _) => ObservedPhase::Failed,
        (None, true) => ObservedPhase::Ready,
        (None, false) => ObservedPhase::Progressing,
    };
    ObservedState {
        instance_id: instance_uuid(mi),
        observed_generation: if ready { Some(mi.spec.generation) } else { previous.observed_generation },
        desired_generation: mi.spec.generation,
        phase,
        ready_replicas,
        desired_replicas: mi.spec.replicas,
        running_version: if ready { Some(mi.spec.version.clone()) } else { previous.running_version },
        config_hash: if ready { Some(render::config_hash(&mi.spec.config)) } else { previous.config_hash },
        reason,
    }
}

fn phase_name(phase: ObservedPhase) -> &'static str {
    match phase {
        ObservedPhase::Progressing => "Progressing",
        ObservedPhase::Ready => "Ready",
        ObservedPhase::Failed => "Failed",
    }
}

fn status_of(mi: &ManagedInstance, observed: &ObservedState) -> ManagedInstanceStatus {
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
        reason: observed.reason.clone(),
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

fn same_status(a: &ManagedInstanceStatus, b: &ManagedInstanceStatus) -> bool {
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

/// Publishes an observed-state event on the instance's observed subject.
async fn publish(ctx: &Context, mi: &ManagedInstance, event: ObservedEvent) -> Result<()> {
    let subject =
        streams::instances::observed_subject(&ctx.config.cluster, &mi.spec.project, instance_uuid(mi));
    let payload = json!({
        "cluster": ctx.config.cluster, "project": mi.spec.project, "instance_id": mi.spec.instance_id,
        "desired_generation": mi.spec.generation, "schema": OBSERVED_EVENT_VERSION,
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true), "event": event,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(streams::headers::EVENT_TYPE, event.type_name());
    headers.insert(streams::headers::SCHEMA_VERSION, OBSERVED_EVENT_VERSION);
    headers.insert(streams::headers::ACTOR, format!("cluster-agent/{}", ctx.config.cluster).as_str());
    headers.insert(streams::headers::TIME, payload["time"].as_str().unwrap_or_default());
    let body = serde_json::to_vec(&payload)?;
    ctx.jetstream
        .publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|e| Error::Nats(e.to_string()))?
        .await
        .map_err(|e| Error::Nats(e.to_string()))?;
    ctx.config.metrics.observed_events.inc();
    Ok(())
}

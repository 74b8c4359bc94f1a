//! The controller half: `ManagedInstance` → workload objects, conditions, observed-state events.
//!
//! A kube-runtime `Controller`, level-triggered: a change of an instance, of one of its objects, of its
//! claims or of its pods reconciles it; reconciles read the watch caches, so an idle cluster sees no
//! requests but the watches. The steps of a reconcile live beside this file: [`converge`] applies and
//! prunes, [`rotation`] replaces a service's password, [`observe`] reads what the cluster reports, [`cleanup`] removes a deprovisioned instance (or
//! lets a deleted mirror go without touching its data).

mod cached;
mod cleanup;
mod converge;
mod index;
mod observe;
mod restore;
mod rotation;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use cached::Cached;
use futures::{StreamExt as _, TryStreamExt as _};
use index::InstanceIndex;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        batch::v1::Job,
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
        networking::v1::NetworkPolicy,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt as _, ResourceExt as _,
    api::{ApiResource, DynamicObject, Patch},
    runtime::{
        Controller, WatchStreamExt as _,
        controller::{self, Action},
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;

use crate::{
    AgentConfig, Error, RETRY_AFTER, Result,
    crd::{FINALIZER, ManagedInstance, ManagedInstanceStatus},
    mirror::Desired,
    render::{ChildKind, INSTANCE_LABEL, MANAGED_SELECTOR, apply_params},
};

/// The API resource of each child kind.
pub fn api_resource(kind: ChildKind) -> ApiResource {
    match kind {
        ChildKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        ChildKind::Service => ApiResource::erase::<Service>(&()),
        ChildKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
        ChildKind::Secret => ApiResource::erase::<Secret>(&()),
        ChildKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        ChildKind::Job => ApiResource::erase::<Job>(&()),
        ChildKind::PostgresCluster => ApiResource {
            group: "postgresql.cnpg.io".into(),
            version: "v1".into(),
            api_version: "postgresql.cnpg.io/v1".into(),
            kind: "Cluster".into(),
            plural: "clusters".into(),
        },
        ChildKind::ObjectStore => ApiResource {
            group: "barmancloud.cnpg.io".into(),
            version: "v1".into(),
            api_version: "barmancloud.cnpg.io/v1".into(),
            kind: "ObjectStore".into(),
            plural: "objectstores".into(),
        },
    }
}

const CHILD_KINDS: [ChildKind; 8] = [
    ChildKind::StatefulSet,
    ChildKind::Service,
    ChildKind::ConfigMap,
    ChildKind::Secret,
    ChildKind::PostgresCluster,
    ChildKind::NetworkPolicy,
    ChildKind::Job,
    ChildKind::ObjectStore,
];

/// Label every object of an instance carries with the ManagedInstance's name (also the selector label of
/// its pods and, through the StatefulSet's selector, of its claims).
const NAME_LABEL: &str = "app.kubernetes.io/instance";

/// What reconciles share.
pub struct Context {
    pub(crate) config: Arc<AgentConfig>,
    /// the control plane's desired state, as the mirror knows it
    desired: Arc<Desired>,
    /// each child kind's watch cache, in the compact form of [`cached`]
    stores: HashMap<ChildKind, Store<Cached>>,
    /// each cache's objects by instance
    indexes: HashMap<ChildKind, InstanceIndex>,
    /// responses of our own writes, newer than the watch caches until the watch catches up
    written: Mutex<HashMap<(ChildKind, String, String), Value>>,
    /// status last written per ManagedInstance uid: the watch cache of ManagedInstances may not show it yet
    statuses: Mutex<HashMap<String, ManagedInstanceStatus>>,
    /// the StatefulSets' volume claims (made by the StatefulSet controller)
    claims: Store<PersistentVolumeClaim>,
    claims_index: InstanceIndex,
    /// the instances' pods (made by the StatefulSet controller or CloudNativePG): where the kubelet
    /// reports why a container does not run
    pods: Store<Pod>,
    pods_index: InstanceIndex,
    /// size last requested per claim uid, so a reconcile ahead of the claim watch does not patch again
    requested: Mutex<HashMap<String, String>>,
    /// uids of objects and claims whose deletion was asked for, per instance id, until the instance's
    /// cleanup ends: an object without finalizers is gone at once but stays in the watch cache until its
    /// delete event arrives, a claim stays (terminating, held by `kubernetes.io/pvc-protection`) while a pod
    /// uses it, and a cleanup ahead of the watches must not delete either again
    deleting: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    jetstream: async_nats::jetstream::Context,
}

fn resource_version(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    pub(crate) fn api(&self, kind: ChildKind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.config.client.clone(), namespace, &api_resource(kind))
    }

    /// The current object: the watch cache, or our own newer write. A write the cache has caught up with
    /// is forgotten, so the agent does not keep a second copy of every object it applied.
    pub(crate) fn current(&self, kind: ChildKind, namespace: &str, name: &str) -> Option<Value> {
        let cached =
            self.stores[&kind].get(&ObjectRef::new_with(name, kind).within(namespace)).map(|o| o.value());
        let mut written = lock(&self.written);
        let key = (kind, namespace.to_owned(), name.to_owned());
        match (cached, written.get(&key)) {
            // Resource versions are opaque in general; on both the simulator and etcd they grow.
            (Some(c), Some(w)) if resource_version(w) > resource_version(&c) => Some(w.clone()),
            (Some(c), Some(_)) => {
                written.remove(&key);
                Some(c)
            }
            (cached, _) => cached,
        }
    }

    pub(crate) fn owned(&self, kind: ChildKind, instance_id: &str) -> Vec<Arc<Cached>> {
        let store = &self.stores[&kind];
        self.indexes[&kind]
            .candidates(instance_id)
            .into_iter()
            .filter_map(|(namespace, name)| store.get(&ObjectRef::new_with(&name, kind).within(&namespace)))
            .filter(|o| o.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(instance_id))
            .collect()
    }

    /// The volume claims of an instance's StatefulSet (they carry its selector labels).
    fn claims(&self, namespace: &str, instance_id: &str) -> Vec<Arc<PersistentVolumeClaim>> {
        of_instance(&self.claims, &self.claims_index, namespace, instance_id)
    }

    /// The pods of an instance (they carry its selector labels).
    fn pods(&self, namespace: &str, instance_id: &str) -> Vec<Arc<Pod>> {
        of_instance(&self.pods, &self.pods_index, namespace, instance_id)
    }

    /// Waits (bounded) until every watch cache has listed once. Until then an object missing from a cache
    /// may exist: a reconcile right after a start would re-apply it (and report it as drift) although
    /// nothing changed. The caches fill while the controller runs, so waiting here cannot stall them.
    async fn caches_ready(&self) -> Result<()> {
        let wait = std::time::Duration::from_secs(10);
        let ready = async {
            for store in self.stores.values() {
                store.wait_until_ready().await?;
            }
            self.claims.wait_until_ready().await?;
            self.pods.wait_until_ready().await
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(crate::Error::Waiting("a watch cache stopped".into())),
            Err(_) => Err(crate::Error::Waiting("the watch caches have not listed yet".into())),
        }
    }

    pub(crate) fn remember(&self, kind: ChildKind, namespace: &str, name: &str, object: Option<Value>) {
        let mut written = lock(&self.written);
        let key = (kind, namespace.to_owned(), name.to_owned());
        match object {
            Some(mut object) => {
                // As the watch caches keep it: without managed fields.
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("managedFields");
                }
                written.insert(key, object)
            }
            None => written.remove(&key),
        };
    }
}

/// The objects of `store` in `namespace` labelled with `instance_id`.
fn of_instance<K>(store: &Store<K>, index: &InstanceIndex, namespace: &str, instance_id: &str) -> Vec<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    index
        .candidates(instance_id)
        .into_iter()
        .filter(|(ns, _)| ns == namespace)
        .filter_map(|(ns, name)| store.get(&ObjectRef::new(&name).within(&ns)))
        .filter(|o| o.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(instance_id))
        .collect()
}

/// Installs (or updates) the ManagedInstance CRD.
pub async fn install_crd(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ManagedInstance::crd();
    api.patch(&crd.name_any(), &apply_params(), &Patch::Apply(&crd)).await?;
    Ok(())
}

/// The ManagedInstance an object belongs to: its instance-name label, in its namespace.
fn instance_of(
    labels: &std::collections::BTreeMap<String, String>,
    namespace: Option<String>,
) -> Option<ObjectRef<ManagedInstance>> {
    labels.get(NAME_LABEL).map(|name| ObjectRef::new(name).within(&namespace.unwrap_or_default()))
}

/// Runs the controller until cancelled.
pub(crate) async fn run(config: Arc<AgentConfig>, desired: Arc<Desired>) -> anyhow::Result<()> {
    let client = config.client.clone();
    let mut stores = HashMap::new();
    let mut indexes = HashMap::new();
    let mut triggers = Vec::new();
    for kind in CHILD_KINDS {
        let resource = api_resource(kind);
        let writer = reflector::store::Writer::new(kind);
        stores.insert(kind, writer.as_reader());
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        // Kept as `Cached`: without managed fields, about half of an object's metadata, which the agent
        // never reads (kube-rs, `reflector` docs: "managed fields typically constitutes around half the
        // size of ObjectMeta"), and the rest as text.
        let watch = watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR)).map_ok(cached::event);
        let index = InstanceIndex::default();
        indexes.insert(kind, index.clone());
        let stream = reflector::reflector(writer, watch)
            .inspect_ok(move |event| index.observe(event))
            .default_backoff()
            .touched_objects();
        triggers.push((stream, kind));
    }
    // Claims and pods carry the StatefulSet's selector, hence the instance label.
    let claims_writer = reflector::store::Writer::default();
    let claims = claims_writer.as_reader();
    let claims_index = InstanceIndex::default();
    let claim_events = reflector::reflector(
        claims_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default().labels(INSTANCE_LABEL),
        )
        .modify(|claim: &mut PersistentVolumeClaim| claim.managed_fields_mut().clear()),
    )
    .inspect_ok({
        let index = claims_index.clone();
        move |event| index.observe(event)
    })
    .default_backoff()
    .touched_objects();
    let pods_writer = reflector::store::Writer::default();
    let pods = pods_writer.as_reader();
    let pods_index = InstanceIndex::default();
    let pod_events = reflector::reflector(
        pods_writer,
        // Of a pod the agent reads its labels, why its containers wait (`observe::pod_failure`) and, for
        // CloudNativePG's instances, each container's image and resources (`observe::cnpg`): the rest of
        // the spec, the larger half, is dropped.
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(INSTANCE_LABEL)).modify(
            |pod: &mut Pod| {
                pod.managed_fields_mut().clear();
                observe::cnpg::keep_containers(pod);
            },
        ),
    )
    .inspect_ok({
        let index = pods_index.clone();
        move |event| index.observe(event)
    })
    .default_backoff()
    .touched_objects();
    let jetstream = streams::accounts::agent_jetstream(config.nats.clone());
    let context = Arc::new(Context {
        config: config.clone(),
        desired,
        stores,
        indexes,
        written: Mutex::default(),
        statuses: Mutex::default(),
        claims,
        claims_index,
        pods,
        pods_index,
        requested: Mutex::default(),
        deleting: Mutex::default(),
        jetstream,
    });
    // The ManagedInstances' own cache, as `Controller::new` makes it (kube-runtime 5.0.0
    // `controller/mod.rs`, `new_with`: a reflector over a watcher, its applied objects the triggers) but
    // without managed fields: the mirror's apply, the status apply and the finalizer patch each own a
    // tree of fields as large as what they wrote, and nothing reads them.
    let instances_writer = reflector::store::Writer::<ManagedInstance>::default();
    let instances = instances_writer.as_reader();
    let instance_events = reflector::reflector(
        instances_writer,
        watcher(Api::<ManagedInstance>::all(client), watcher::Config::default())
            .modify(|mi: &mut ManagedInstance| mi.managed_fields_mut().clear()),
    )
    .applied_objects();
    let mut controller = Controller::for_stream(instance_events, instances)
        .with_config(controller::Config::default().concurrency(config.concurrency));
    // Level-triggered safety net: re-check every instance periodically. Reconciles read the watch caches,
    // so a converged cluster sees no requests from it.
    let period = config.resync;
    let resync = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    });
    controller = controller.reconcile_all_on(resync);
    for (stream, kind) in triggers {
        // Triggers come from the reflected streams, so a reconcile always sees the change that caused it.
        // Objects name their instance by label (they have no owner reference, see `render`).
        controller = controller.watches_stream_with(
            stream,
            |object: Cached| instance_of(object.labels(), object.namespace()),
            kind,
        );
    }
    controller = controller
        .watches_stream(claim_events, |claim: PersistentVolumeClaim| {
            instance_of(claim.labels(), claim.namespace())
        })
        .watches_stream(pod_events, |pod: Pod| instance_of(pod.labels(), pod.namespace()));
    let reconciled = config.metrics.reconciled.clone();
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok(_) => reconciled.send_modify(|n| *n += 1),
                Err(e) => tracing::debug!(error = %e, "controller event"),
            }
            futures::future::ready(())
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
    ctx.caches_ready().await?;
    let namespace = mi.namespace().unwrap_or_default();
    let api: Api<ManagedInstance> = Api::namespaced(ctx.config.client.clone(), &namespace);
    finalizer(&api, FINALIZER, mi, |event| async {
        match event {
            FinalizerEvent::Apply(mi) => converge::apply(mi, &ctx).await,
            FinalizerEvent::Cleanup(mi) => cleanup::cleanup(mi, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn instance_uuid(mi: &ManagedInstance) -> uuid::Uuid {
    mi.spec.instance_id.parse().unwrap_or_default()
}

fn about(mi: &ManagedInstance) -> crate::publish::About<'_> {
    crate::publish::About {
        project: &mi.spec.project,
        instance_id: instance_uuid(mi),
        desired_generation: mi.spec.generation,
    }
}

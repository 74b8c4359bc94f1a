//! One cluster's API server, simulated or real, behind the few operations the scenarios need: a view of
//! namespace `cp-acme`, hand edits and deletions as a person would make them, and pod faults.

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _};

use k8s_openapi::api::core::v1::Pod;
use k8s_sim::Simulator;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use kubeenv::{ControlPlane, Identity};
use serde_json::{Value, json};

use super::{NAMESPACE, View};

/// The resources a [`View`] holds: (group, version, plural).
const VIEWED: [(&str, &str, &str); 15] = [
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("", "v1", "services"),
    ("", "v1", "pods"),
    ("", "v1", "persistentvolumeclaims"),
    ("apps", "v1", "statefulsets"),
    ("postgresql.cnpg.io", "v1", "clusters"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("cp.example.com", "v1alpha1", "managedinstances"),
    ("batch", "v1", "jobs"),
    ("barmancloud.cnpg.io", "v1", "objectstores"),
    ("postgresql.cnpg.io", "v1", "backups"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
];

fn resource_key(group: &str, plural: &str) -> String {
    if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") }
}

fn api_resource(resource: &str) -> ApiResource {
    let (group, version, plural) = VIEWED
        .iter()
        .find(|(g, _, p)| resource_key(g, p) == resource)
        .copied()
        .unwrap_or_else(|| panic!("not a viewed resource: {resource}"));
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: String::new(),
        plural: plural.into(),
    }
}

fn sim_view(store: &k8s_sim::store::Store) -> View {
    let mut view = View::default();
    for (group, version, plural) in VIEWED {
        let Some(ty) = store.resource_type(group, version, plural) else { continue };
        for object in store.list(&ty, Some(NAMESPACE), None) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            view.objects.insert((resource_key(group, plural), name), object);
        }
    }
    view
}

/// A [`View`] kept from the watches' events, as a reflector keeps its store: a (re)list's objects replace
/// the resource's once the list is complete.
#[derive(Default)]
struct Watched {
    view: View,
    /// the objects of each list under way, by resource
    listing: HashMap<String, Vec<(String, Value)>>,
    /// the resources whose initial list is complete
    listed: HashSet<String>,
}

impl Watched {
    fn apply(&mut self, key: String, event: Result<watcher::Event<DynamicObject>, watcher::Error>) {
        // A failed watch is retried by the stream itself (with backoff); the view keeps what it saw.
        let Ok(event) = event else { return };
        let entry = |object: &DynamicObject| {
            (object.metadata.name.clone().unwrap_or_default(), serde_json::to_value(object).unwrap())
        };
        match event {
            watcher::Event::Apply(object) => {
                let (name, value) = entry(&object);
                self.view.objects.insert((key, name), value);
            }
            watcher::Event::Delete(object) => {
                self.view.objects.remove(&(key, object.metadata.name.unwrap_or_default()));
            }
            watcher::Event::Init => {
                self.listing.insert(key, Vec::new());
            }
            watcher::Event::InitApply(object) => self.listing.entry(key).or_default().push(entry(&object)),
            watcher::Event::InitDone => {
                self.view.objects.retain(|(resource, _), _| *resource != key);
                for (name, value) in self.listing.remove(&key).unwrap_or_default() {
                    self.view.objects.insert((key.clone(), name), value);
                }
                self.listed.insert(key);
            }
        }
    }
}

/// A pod fault the kubelet would report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodFault {
    /// the container keeps crashing: Running, container waiting in `CrashLoopBackOff`
    CrashLoop,
    /// the image cannot be pulled: Pending, container waiting in `ImagePullBackOff`
    ImagePull,
}

impl PodFault {
    pub fn reason(self) -> &'static str {
        match self {
            Self::CrashLoop => "CrashLoopBackOff",
            Self::ImagePull => "ImagePullBackOff",
        }
    }
}

#[allow(clippy::large_enum_variant, reason = "one per cluster of a test, never in a collection")]
pub enum Kube {
    Sim { sim: Simulator, url: String },
    Real { plane: ControlPlane, admin: kube::Client },
}

impl Kube {
    pub fn is_sim(&self) -> bool {
        matches!(self, Self::Sim { .. })
    }

    pub fn sim(&self) -> &Simulator {
        match self {
            Self::Sim { sim, .. } => sim,
            Self::Real { .. } => panic!("this scenario needs the simulator"),
        }
    }

    /// The agent's client configuration: on the real server, the agent's service account, held to the
    /// ClusterRole of `deploy/rbac/`.
    pub async fn agent_config(&self) -> kube::Config {
        match self {
            Self::Sim { url, .. } => kube::Config::new(url.parse().unwrap()),
            Self::Real { plane, .. } => plane.config(Identity::Agent).await.expect("agent kubeconfig"),
        }
    }

    /// How to start the agent binary against this cluster: extra arguments and environment.
    pub fn agent_process_args(&self, command: &mut Command) {
        match self {
            Self::Sim { url, .. } => {
                command.args(["--kube-url", url, "--install-crd"]);
            }
            Self::Real { plane, .. } => {
                command.env("KUBECONFIG", plane.kubeconfig(Identity::Agent));
            }
        }
    }

    pub(super) async fn view(&self) -> View {
        match self {
            Self::Sim { sim, .. } => sim_view(&sim.store()),
            Self::Real { admin, .. } => {
                let mut view = View::default();
                for (group, _, plural) in VIEWED {
                    let key = resource_key(group, plural);
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(admin.clone(), NAMESPACE, &api_resource(&key));
                    let Ok(list) = api.list(&ListParams::default()).await else { continue };
                    for object in list {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        view.objects.insert((key.clone(), name), serde_json::to_value(object).unwrap());
                    }
                }
                view
            }
        }
    }

    /// Waits until `ready` holds, re-checking after every change the API server reports: the
    /// simulator's change feed, or watches on every viewed resource of the real server.
    pub(super) async fn wait_until(&self, timeout: Duration, ready: impl Fn(&View) -> bool) -> bool {
        match self {
            Self::Sim { sim, .. } => sim.wait_until(timeout, |store| ready(&sim_view(store))).await,
            Self::Real { admin, .. } => {
                let changes = VIEWED.iter().map(|(group, _, plural)| {
                    let key = resource_key(group, plural);
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(admin.clone(), NAMESPACE, &api_resource(&key));
                    let events = watcher(api, watcher::Config::default()).default_backoff();
                    events.map(move |event| (key.clone(), event)).boxed()
                });
                let mut changes = futures::stream::select_all(changes);
                let deadline = tokio::time::Instant::now() + timeout;
                // The view is kept current one changed object at a time. Rebuilt from every object after
                // each change, it cost the whole test thread, which the agent under test shares, once a
                // few hundred instances converged (leader.rs).
                let mut watched = Watched::default();
                loop {
                    // `ready` is asked only once every watch has its initial list.
                    if watched.listed.len() == VIEWED.len() && ready(&watched.view) {
                        return true;
                    }
                    // The watches advance only while their stream is polled.
                    let Ok(Some((key, event))) = tokio::time::timeout_at(deadline, changes.next()).await
                    else {
                        return false;
                    };
                    watched.apply(key, event);
                    // Changes that have already arrived are taken in before `ready` is asked again.
                    while let Some(Some((key, event))) = changes.next().now_or_never() {
                        watched.apply(key, event);
                    }
                }
            }
        }
    }

    /// A hand edit (JSON merge patch) of an object in `cp-acme`, as `kubectl edit` would make it.
    pub async fn hand_edit(&self, resource: &str, name: &str, patch: Value) {
        match self {
            Self::Sim { sim, .. } => {
                let mut store = sim.store();
                let ty = store.types().iter().find(|t| t.key() == resource).cloned().expect("type");
                store.merge_patch(&ty, NAMESPACE, name, &patch, false).expect("hand edit");
            }
            Self::Real { admin, .. } => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(admin.clone(), NAMESPACE, &api_resource(resource));
                let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
                api.patch(name, &params, &Patch::Merge(&patch)).await.expect("hand edit");
            }
        }
    }

    /// `kubectl delete <kind> <name> -n cp-acme` with upstream's kubectl, on either backend. Run without
    /// blocking: the simulator answers from this test's own runtime.
    pub async fn kubectl_delete(&self, kind: &str, name: &str) {
        let command = match self {
            Self::Sim { url, .. } => {
                let mut command = Command::new(kubeenv::bin_dir().expect("kubectl").join("kube"));
                command.args(["kubectl", "--server", url]);
                command
            }
            Self::Real { plane, .. } => plane.kubectl(Identity::Admin),
        };
        let mut command = tokio::process::Command::from(command);
        // Returns once the deletion is accepted; what happens next is the scenario's to observe.
        let output = command
            .args(["delete", kind, name, "-n", NAMESPACE, "--wait=false"])
            .output()
            .await
            .expect("kubectl");
        assert!(
            output.status.success(),
            "kubectl delete {kind} {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Makes every pod of the StatefulSet `set` report `fault` (the simulator through its fault
    /// injection; the real cluster through pod status written as the kubelet would, with the pods held
    /// from kwok's pod-ready stage).
    pub async fn inject_pod_fault(&self, set: &str, fault: PodFault) {
        match self {
            Self::Sim { sim, .. } => {
                let mut faults = k8s_sim::server::Faults::default();
                match fault {
                    PodFault::CrashLoop => faults.crash_loop = vec![set.into()],
                    PodFault::ImagePull => faults.image_pull_failure = vec![set.into()],
                }
                sim.set_faults(faults);
            }
            Self::Real { admin, .. } => {
                let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
                for pod in self.pods_of(set).await {
                    let hold = json!({"metadata": {"annotations": {"cp.example.com/test-hold": "true"}}});
                    pods.patch(&pod, &PatchParams::default(), &Patch::Merge(&hold)).await.expect("hold pod");
                    let current = pods.get(&pod).await.expect("pod");
                    let containers = current.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
                    let (phase, restarts) = match fault {
                        PodFault::CrashLoop => ("Running", 5),
                        PodFault::ImagePull => ("Pending", 0),
                    };
                    let statuses: Vec<Value> = containers
                        .iter()
                        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": false,
                            "restartCount": restarts, "started": false,
                            "state": {"waiting": {"reason": fault.reason(), "message": format!("test-injected {}", fault.reason())}}}))
                        .collect();
                    let status = json!({"status": {"phase": phase, "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                                       {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"}]}});
                    pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .expect("pod status");
                }
            }
        }
    }

    /// Clears injected pod faults: the simulator's controllers settle again; on the real cluster the
    /// failed pods are deleted, as an operator would after fixing the cause, and the StatefulSet
    /// controller makes new ones that kwok's stages make Running and Ready.
    pub async fn clear_pod_faults(&self, set: &str) {
        match self {
            Self::Sim { sim, .. } => sim.set_faults(k8s_sim::server::Faults::default()),
            Self::Real { admin, .. } => {
                let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
                for pod in self.pods_of(set).await {
                    pods.delete(&pod, &Default::default()).await.expect("delete pod");
                }
            }
        }
    }

    /// From now on the CloudNativePG operator's stand-in does not process the `Cluster` `name` (its
    /// status, instance pods and running parameters stay as they are), as while the operator has not yet
    /// reconciled a change: the simulator through its fault injection, the real cluster's stand-in
    /// (`kubeenv::cnpg`) directly.
    pub async fn hold_cnpg(&self, name: &str) {
        match self {
            Self::Sim { sim, .. } => {
                sim.set_faults(k8s_sim::server::Faults { cnpg_held: vec![name.into()], ..Default::default() })
            }
            Self::Real { plane, .. } => plane.cnpg().hold(NAMESPACE, name),
        }
    }

    /// The stand-in processes the `Cluster` `name` again.
    pub async fn release_cnpg(&self, name: &str) {
        match self {
            Self::Sim { sim, .. } => sim.set_faults(k8s_sim::server::Faults::default()),
            Self::Real { plane, .. } => plane.cnpg().release(NAMESPACE, name),
        }
    }

    async fn pods_of(&self, set: &str) -> Vec<String> {
        let view = self.view().await;
        view.names("pods")
            .into_iter()
            .filter(|p| p.strip_prefix(&format!("{set}-")).is_some_and(|o| o.parse::<u32>().is_ok()))
            .collect()
    }
}

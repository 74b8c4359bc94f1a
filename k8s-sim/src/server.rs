//! The HTTP face of the simulator.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::store::{Change, ResourceType, StatusError, Store, selector_matches};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// how long simulated controllers take to make workloads ready
    pub ready_delay: Duration,
    /// interval of watch bookmarks
    pub bookmark_interval: Duration,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self { ready_delay: Duration::from_millis(200), bookmark_interval: Duration::from_secs(1) }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// workloads whose name matches (`*` for all) fail to pull their image
    #[serde(default)]
    pub image_pull_failure: Vec<String>,
    /// workloads whose name matches (`*` for all) crash in a loop
    #[serde(default)]
    pub crash_loop: Vec<String>,
    /// every n-th API request (not watches) fails with 500; 0 = never
    #[serde(default)]
    pub fail_every_nth_request: u64,
    /// extra latency of every API request (not watches), in milliseconds
    #[serde(default)]
    pub latency_ms: u64,
    /// the storage class cannot expand volumes: growing a claim's request is refused with 403
    #[serde(default)]
    pub volume_expansion_refused: bool,
}

impl Faults {
    /// The failure reason for a workload, if one is injected.
    pub fn workload_failure(&self, name: &str) -> Option<&'static str> {
        let hit = |list: &[String]| list.iter().any(|p| p == "*" || p == name);
        if hit(&self.image_pull_failure) {
            Some("ImagePullBackOff")
        } else if hit(&self.crash_loop) {
            Some("CrashLoopBackOff")
        } else {
            None
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Mutex<Store>,
    pub(crate) changes: broadcast::Sender<Change>,
    counts: Mutex<BTreeMap<String, u64>>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) options: SimulatorOptions,
    /// the generation each workload was last settled at, by (resource, namespace, name)
    pub(crate) settled: Mutex<std::collections::HashMap<(String, String, String), i64>>,
    requests: std::sync::atomic::AtomicU64,
    /// the most bookmarks any one watch has sent (one per interval per watch, so this counts intervals)
    bookmark_rounds: tokio::sync::watch::Sender<u64>,
}

/// A simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// A simulator with the `default` namespace; starts its controllers (needs a Tokio runtime).
    pub fn new(options: SimulatorOptions) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        let mut store = Store::new(changes.clone());
        let ns = store.resource_type("", "v1", "namespaces").expect("built-in");
        let _ = store.create(&ns, "", json!({"metadata": {"name": "default"}}));
        let inner = Inner {
            store: Mutex::new(store),
            changes,
            counts: Mutex::default(),
            faults: Mutex::default(),
            options,
            settled: Mutex::default(),
            requests: Default::default(),
            bookmark_rounds: tokio::sync::watch::Sender::new(0),
        };
        let sim = Self { inner: Arc::new(inner) };
        crate::controllers::spawn(sim.clone());
        sim
    }

    /// Serves on `addr` (port 0 picks one); returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(bound)
    }

    /// Requests served, by `verb resource` (e.g. `patch statefulsets.apps`).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.counts).clone()
    }

    /// The most bookmarks any one watch has sent. A watch sends one per bookmark interval, so this grows by
    /// at most one per interval.
    pub fn bookmark_rounds(&self) -> u64 {
        *self.inner.bookmark_rounds.borrow()
    }

    /// Waits until [`Self::bookmark_rounds`] reaches `round`, at most `timeout`; returns whether it did.
    /// How a test lets time pass in the simulator's own terms (a quiet window) without sleeping: `n + 1`
    /// more rounds span at least `n` bookmark intervals.
    pub async fn wait_for_bookmark_round(&self, round: u64, timeout: Duration) -> bool {
        let mut rounds = self.inner.bookmark_rounds.subscribe();
        tokio::time::timeout(timeout, rounds.wait_for(|n| *n >= round)).await.is_ok_and(|r| r.is_ok())
    }

    /// Sets the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
        crate::controllers::resync(self);
    }

    /// Every change from now on, in resourceVersion order.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Waits until `ready` holds for the objects, at most `timeout`; re-checks after every change.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&Store) -> bool) -> bool {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready(&self.store()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return ready(&self.store()),
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Direct access to the objects (for tests and simulated controllers).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.store)
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/sim/requests", get(requests))
            .route("/sim/faults", post(set_faults).get(get_faults))
            .route("/version", get(|| async { Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-k8s-sim", "platform": "linux/amd64"})) }))
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})) }))
            .route("/apis", get(groups))
            .fallback(resource)
            .with_state(self.clone())
    }

    fn count(&self, verb: &str, resource: &str) {
        *lock(&self.inner.counts).entry(format!("{verb} {resource}")).or_default() += 1;
    }
}

async fn requests(State(sim): State<Simulator>) -> Json<BTreeMap<String, u64>> {
    Json(sim.request_counts())
}

async fn get_faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(lock(&sim.inner.faults).clone())
}

async fn set_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> Json<Faults> {
    sim.set_faults(faults.clone());
    Json(faults)
}

async fn groups(State(sim): State<Simulator>) -> Json<Value> {
    let store = sim.store();
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in store.types().iter().filter(|t| !t.group.is_empty()) {
        let versions = by_group.entry(t.group.clone()).or_default();
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(name, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    let mut resources = Vec::new();
    for t in types.iter().filter(|t| t.group == group && t.version == version) {
        let singular = t.kind.to_lowercase();
        let short: &[&str] = match t.plural.as_str() {
            "namespaces" => &["ns"],
            "configmaps" => &["cm"],
            "services" => &["svc"],
            "statefulsets" => &["sts"],
            "pods" => &["po"],
            "customresourcedefinitions" => &["crd", "crds"],
            _ => &[],
        };
        resources.push(
            json!({"name": t.plural, "singularName": singular, "namespaced": t.namespaced, "kind": t.kind,
            "shortNames": short, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    label_selector: Option<String>,
    allow_watch_bookmarks: Option<bool>,
    timeout_seconds: Option<u64>,
    field_manager: Option<String>,
}

fn status_response(e: &StatusError) -> Response {
    (StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(e.body()))
        .into_response()
}

fn not_found(what: &str) -> Response {
    status_response(&StatusError {
        code: 404,
        reason: "NotFound",
        message: format!("the server could not find the requested resource ({what})"),
    })
}

/// A parsed resource path.
struct Target {
    ty: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse(sim: &Simulator, path: &str) -> Result<Target, Box<Response>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(Box::new(not_found(path))),
    };
    let store = sim.store();
    if rest.is_empty() {
        return Err(Box::new(Json(resource_list(store.types(), group, version)).into_response()));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !(group.is_empty() && *plural == "status") => {
            (Some((*ns).to_owned()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let ty = store.resource_type(group, version, rest[0]).ok_or_else(|| Box::new(not_found(path)))?;
    let name = rest.get(1).map(|s| (*s).to_owned());
    let status = rest.get(2) == Some(&"status");
    if rest.len() > 3 || (rest.len() == 3 && !status) {
        return Err(Box::new(not_found(path)));
    }
    Ok(Target { ty, namespace, name, status })
}

async fn resource(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let target = match parse(&sim, uri.path()) {
        Ok(t) => t,
        Err(response) => return *response,
    };
    let watching = params.watch.as_deref().is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name) {
        (&Method::GET, None) if watching => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    };
    let resource = if target.status { format!("{}/status", target.ty.key()) } else { target.ty.key() };
    sim.count(verb, &resource);
    if verb != "watch" {
        let faults = lock(&sim.inner.faults).clone();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let n = sim.inner.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if faults.fail_every_nth_request > 0 && n % faults.fail_every_nth_request == 0 {
            return status_response(&StatusError {
                code: 500,
                reason: "InternalError",
                message: "injected fault".into(),
            });
        }
        if faults.volume_expansion_refused && verb == "patch" && resource == "persistentvolumeclaims" {
            // What the apiserver's admission answers for a StorageClass without allowVolumeExpansion.
            return status_response(&StatusError {
                code: 403,
                reason: "Forbidden",
                message: "persistentvolumeclaims is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize".into(),
            });
        }
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    if target.ty.namespaced && target.name.is_some() && target.namespace.is_none() {
        return not_found(uri.path());
    }
    let result = match (verb, target.name.as_deref()) {
        ("watch", _) => return watch(&sim, &target, &params),
        ("list", _) => {
            let store = sim.store();
            let mut items =
                store.list(&target.ty, target.namespace.as_deref(), params.label_selector.as_deref());
            // As a real API server: items of a built-in type's list carry no apiVersion and kind (the
            // list's own do); custom resources' items keep theirs (they are served unstructured).
            let group = target.ty.group.as_str();
            let built_in = group.is_empty() || group == "apps" || group.ends_with(".k8s.io");
            if built_in {
                for item in &mut items {
                    if let Some(item) = item.as_object_mut() {
                        item.remove("apiVersion");
                        item.remove("kind");
                    }
                }
            }
            return Json(
                json!({"kind": format!("{}List", target.ty.kind), "apiVersion": target.ty.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items}),
            )
            .into_response();
        }
        ("get", Some(name)) => {
            let object = sim.store().get(&target.ty, &namespace, name);
            return match object {
                Some(o) => Json(o).into_response(),
                None => status_response(&StatusError {
                    code: 404,
                    reason: "NotFound",
                    message: format!("{} \"{name}\" not found", target.ty.plural),
                }),
            };
        }
        ("create", None) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => sim.store().create(&target.ty, &namespace, object),
            Err(e) => Err(StatusError { code: 400, reason: "BadRequest", message: e.to_string() }),
        },
        ("patch", Some(name)) => {
            let content_type =
                headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            match serde_json::from_slice::<Value>(&body) {
                Err(e) => Err(StatusError {
                    code: 400,
                    reason: "BadRequest",
                    message: format!("patch body is not JSON: {e}"),
                }),
                Ok(patch) if content_type.starts_with("application/apply-patch") => {
                    let manager = params.field_manager.as_deref().unwrap_or("unknown");
                    sim.store().apply(&target.ty, &namespace, name, manager, patch, target.status)
                }
                Ok(patch) if content_type.starts_with("application/json-patch") => {
                    sim.store().json_patch(&target.ty, &namespace, name, patch, target.status)
                }
                Ok(patch) => sim.store().merge_patch(&target.ty, &namespace, name, &patch, target.status),
            }
        }
        ("update", Some(name)) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => sim.store().replace(&target.ty, &namespace, name, object, target.status),
            Err(e) => Err(StatusError { code: 400, reason: "BadRequest", message: e.to_string() }),
        },
        ("delete", Some(name)) => sim.store().delete(&target.ty, &namespace, name),
        _ => Err(StatusError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("{method} is not supported here"),
        }),
    };
    match result {
        Ok(object) => {
            let code = if verb == "create" { StatusCode::CREATED } else { StatusCode::OK };
            (code, Json(object)).into_response()
        }
        Err(e) => status_response(&e),
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(sim: &Simulator, target: &Target, params: &Params) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1024);
    let resource = target.ty.key();
    let namespace = target.namespace.clone();
    let selector = params.label_selector.clone();
    let matches = {
        let (resource, namespace, selector) = (resource.clone(), namespace.clone(), selector.clone());
        move |c: &Change| {
            c.resource == resource
                && namespace.as_deref().is_none_or(|ns| c.namespace == ns)
                && selector.as_deref().is_none_or(|s| {
                    selector_matches(
                        s,
                        c.object["metadata"]["labels"].as_object().unwrap_or(&serde_json::Map::new()),
                    )
                })
        }
    };
    let (initial, mut last_seen, mut changes, gone) = {
        let store = sim.store();
        let changes = sim.inner.changes.subscribe();
        let rv = params.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if rv == 0 {
            let items = store.list(&target.ty, namespace.as_deref(), selector.as_deref());
            let initial: Vec<Bytes> = items.iter().map(|o| watch_line("ADDED", o)).collect();
            (initial, store.resource_version(), changes, false)
        } else if rv < store.oldest_resumable() {
            (vec![], rv, changes, true)
        } else {
            let initial = store
                .changes_since(rv, &resource, namespace.as_deref())
                .into_iter()
                .filter(|c| matches(c))
                .map(|c| watch_line(c.kind, &c.object))
                .collect();
            (initial, store.resource_version(), changes, false)
        }
    };
    if gone {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version"});
        let body = Body::from(watch_line("ERROR", &status));
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let bookmarks = params.allow_watch_bookmarks.unwrap_or(false);
    let interval = sim.inner.options.bookmark_interval;
    let timeout = Duration::from_secs(params.timeout_seconds.unwrap_or(1800).max(1));
    let api_version = target.ty.api_version();
    let kind = target.ty.kind.clone();
    let sim = sim.clone();
    tokio::spawn(async move {
        let mut sent = 0;
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => {
                        // Bookmarks carry the last resourceVersion this stream has passed, so resuming from
                        // one never skips a change still queued here.
                        last_seen = last_seen.max(change.rv);
                        if matches(&change) && tx.send(Ok(watch_line(change.kind, &change.object))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "watch fell behind"});
                        let _ = tx.send(Ok(watch_line("ERROR", &status))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let bookmark = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_seen.to_string()}});
                    if tx.send(Ok(watch_line("BOOKMARK", &bookmark))).await.is_err() {
                        return;
                    }
                    sent += 1;
                    sim.inner.bookmark_rounds.send_if_modified(|n| {
                        let newer = sent > *n;
                        *n = (*n).max(sent);
                        newer
                    });
                }
                () = &mut deadline => return,
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(ReceiverStream::new(rx))).into_response()
}

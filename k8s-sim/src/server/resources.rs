//! The resource endpoints: get, list, watch (with bookmarks and 410 Gone), create, apply, patch, replace,
//! delete, and the status subresource, with the simulator's injected faults.

use std::time::Duration;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Simulator, discovery::resource_list, lock};
use crate::store::{Change, ResourceType, StatusError, selector_matches};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Params {
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

pub(super) async fn resource(
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
    let faults = lock(&sim.inner.faults).clone();
    if faults.down {
        return status_response(&StatusError {
            code: 503,
            reason: "ServiceUnavailable",
            message: "injected fault: the API server is down".into(),
        });
    }
    if verb == "watch" && faults.watch_gone_every_nth > 0 {
        let n = {
            let mut watches = lock(&sim.inner.watches);
            let count = watches.entry(resource.clone()).or_default();
            *count += 1;
            *count
        };
        if n % faults.watch_gone_every_nth == 0 {
            // What the apiserver answers a watch from a compacted resourceVersion
            // (k8s.io/apiserver storage: "too old resource version").
            return status_response(&StatusError {
                code: 410,
                reason: "Expired",
                message: "too old resource version (injected fault)".into(),
            });
        }
    }
    if verb != "watch" {
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let n = sim.inner.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if faults.fail_every_nth_request > 0 && n % faults.fail_every_nth_request == 0 {
            let (code, reason, message) = match faults.fail_with.unwrap_or(500) {
                409 => (
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected fault)",
                ),
                429 => (
                    429,
                    "TooManyRequests",
                    "the server has received too many requests and has asked us to try again later (injected fault)",
                ),
                _ => (500, "InternalError", "injected fault"),
            };
            let mut response = status_response(&StatusError { code, reason, message: message.into() });
            if code == 429 {
                response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            }
            return response;
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

/// A change as a watch line, from the object's text as the store wrote it once.
fn change_line(change: &Change) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{}\",\"object\":{}}}\n", change.kind, change.object))
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
                && selector.as_deref().is_none_or(|s| selector_matches(s, &c.labels))
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
                .map(|c| change_line(&c))
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
                        if matches(&change) {
                            let delay = lock(&sim.inner.faults).watch_delay_ms;
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            if tx.send(Ok(change_line(&change))).await.is_err() {
                                return;
                            }
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

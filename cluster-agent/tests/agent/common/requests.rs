//! Every request an agent makes, recorded on its own client: the same accounting on both backends.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use cluster_agent::Metrics;

type Log = Arc<Mutex<BTreeMap<String, u64>>>;

/// Requests by `verb resource`, e.g. `patch statefulsets.apps`, `patch managedinstances.cp.example.com/status`.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    counts: Log,
    /// `create resource` for each server-side apply the API server answered `201 Created`
    applied_creates: Log,
}

impl Requests {
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every `verb resource` the API server authorized for the agent: each request's own verb, and
    /// `create` for a server-side apply that created its object. Such an apply is a PATCH, authorized as
    /// `patch` on the way in, and, once the object turns out not to exist, as `create` too
    /// (k8s.io/apiserver v0.36.1 `pkg/endpoints/handlers/patch.go`: `createAuthorizerAttributes` with
    /// `Verb: "create"`, checked by `withAuthorization` in `createValidation`; `wasCreated` makes the
    /// answer `201 Created`).
    pub fn authorized(&self) -> std::collections::BTreeSet<String> {
        let mut all: std::collections::BTreeSet<String> = self.counts().into_keys().collect();
        all.extend(self.applied_creates.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned());
        all
    }

    /// A client that records every request here and counts it in the agent's metrics.
    pub fn client(&self, config: kube::Config, metrics: &Metrics) -> kube::Client {
        let counter = metrics.kube_requests.clone();
        let counts = self.counts.clone();
        let applied_creates = self.applied_creates.clone();
        let layer = tower::layer::layer_fn(move |inner| Record {
            inner,
            counter: counter.clone(),
            counts: counts.clone(),
            applied_creates: applied_creates.clone(),
        });
        kube::client::ClientBuilder::try_from(config).expect("client").with_layer(&layer).build()
    }
}

/// The recording layer's service: counts each request, and on its answer notes an apply that created.
struct Record<S> {
    inner: S,
    counter: prometheus_client::metrics::counter::Counter,
    counts: Log,
    applied_creates: Log,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for Record<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        self.counter.inc();
        let key = key(request.method(), request.uri());
        if let Some(key) = &key {
            *self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default() += 1;
        }
        let apply = request.method() == http::Method::PATCH
            && request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
        let created = (apply && key.is_some())
            .then(|| key.as_deref().and_then(|k| k.split_once(' ')).map(|(_, r)| format!("create {r}")))
            .flatten();
        let applied_creates = self.applied_creates.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(created) = created
                && response.status() == http::StatusCode::CREATED
            {
                *applied_creates
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(created)
                    .or_default() += 1;
            }
            Ok(response)
        })
    }
}

/// `verb resource` of a request to a resource path (`/api/v1/...`, `/apis/<group>/<version>/...`);
/// `None` for discovery and other paths.
fn key(method: &http::Method, uri: &http::Uri) -> Option<String> {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    // `namespaces/<ns>/<plural>/...` is namespaced; `namespaces` or `namespaces/<name>` is the Namespace.
    let rest = match rest {
        ["namespaces", _, plural, more @ ..] => {
            let mut v = vec![*plural];
            v.extend(more);
            v
        }
        other => other.to_vec(),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watching = uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method.as_str(), name) {
        ("GET", None) if watching => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    let mut resource = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
    if let Some(sub) = subresource {
        resource = format!("{resource}/{sub}");
    }
    Some(format!("{verb} {resource}"))
}

#[test]
fn request_keys_name_verb_resource_group_and_subresource() {
    let k = |m: &str, u: &str| key(&m.parse().unwrap(), &u.parse().unwrap());
    assert_eq!(
        k("PATCH", "/apis/apps/v1/namespaces/cp-acme/statefulsets/db?fieldManager=x").unwrap(),
        "patch statefulsets.apps"
    );
    assert_eq!(k("GET", "/api/v1/pods?labelSelector=a&watch=true").unwrap(), "watch pods");
    assert_eq!(k("GET", "/api/v1/persistentvolumeclaims").unwrap(), "list persistentvolumeclaims");
    assert_eq!(k("PATCH", "/api/v1/namespaces/cp-acme").unwrap(), "patch namespaces");
    assert_eq!(
        k("PATCH", "/apis/cp.example.com/v1alpha1/namespaces/cp-acme/managedinstances/db/status").unwrap(),
        "patch managedinstances.cp.example.com/status"
    );
    assert_eq!(k("GET", "/apis"), None);
}

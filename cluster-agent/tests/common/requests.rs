//! Every request an agent makes, recorded on its own client: the same accounting on both backends.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use cluster_agent::Metrics;

/// Requests by `verb resource`, e.g. `patch statefulsets.apps`, `patch managedinstances.cp.example.com/status`.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, u64>>>);

impl Requests {
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A client that records every request here and counts it in the agent's metrics.
    pub fn client(&self, config: kube::Config, metrics: &Metrics) -> kube::Client {
        let counter = metrics.kube_requests.clone();
        let log = self.0.clone();
        let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counter.inc();
            if let Some(key) = key(request.method(), request.uri()) {
                *log.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += 1;
            }
            request
        });
        kube::client::ClientBuilder::try_from(config).expect("client").with_layer(&layer).build()
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

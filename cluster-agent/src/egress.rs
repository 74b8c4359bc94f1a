//! Keeps every project namespace's egress policies (`render::egress`) as the agent renders them,
//! level-triggered: the mirror applies them with the namespace (before any of its pods exist) and checks
//! them once at start against one LIST; beside that a watch of the policies puts back one deleted or
//! edited by hand. A security policy is compared whole (its `spec` equal to the rendered one), not as a
//! subset like the instances' objects: a peer someone added would widen it.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch},
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use serde_json::Value;

use crate::{
    AgentConfig, Result,
    mirror::Desired,
    render::{
        apply_params,
        egress::{Egress, SELECTOR},
    },
};

/// Whether the policy found (`None`: absent) is the rendered one.
fn is_kept(desired: &Value, found: Option<&Value>) -> bool {
    found.is_some_and(|found| {
        found["spec"] == desired["spec"]
            && desired["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| found["metadata"]["labels"][k] == *v)
    })
}

/// Makes `namespace`'s egress policies the rendered ones, given those it holds (`found`, each as JSON):
/// applies what is missing or differs, deletes an egress policy no longer rendered. Writes nothing when
/// everything is as rendered.
pub(crate) async fn keep(
    config: &AgentConfig,
    egress: &Egress,
    namespace: &str,
    found: &[Value],
) -> Result<()> {
    let api: Api<NetworkPolicy> = Api::namespaced(config.client.clone(), namespace);
    let desired = egress.policies(namespace);
    let name = |v: &Value| v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    for policy in &desired {
        let found = found.iter().find(|f| name(f) == name(policy));
        if !is_kept(policy, found) {
            if found.is_some() {
                tracing::warn!(%namespace, policy = %name(policy), "egress policy changed by hand; applied again");
            }
            api.patch(&name(policy), &apply_params(), &Patch::Apply(policy)).await?;
        }
    }
    for stale in found.iter().filter(|f| !desired.iter().any(|d| name(d) == name(f))) {
        match api.delete(&name(stale), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The egress policies of every namespace, by one LIST.
pub(crate) async fn list(config: &AgentConfig) -> Result<Vec<NetworkPolicy>> {
    let api: Api<NetworkPolicy> = Api::all(config.client.clone());
    Ok(api.list(&ListParams::default().labels(SELECTOR)).await?.items)
}

/// Checks every namespace the agent made against what the cluster holds, from `policies` (one LIST).
pub(crate) async fn keep_all(
    config: &AgentConfig,
    egress: &Egress,
    namespaces: &[String],
    policies: &[NetworkPolicy],
) {
    for namespace in namespaces {
        let found: Vec<Value> = policies
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        if let Err(e) = keep(config, egress, namespace, &found).await {
            tracing::warn!(%namespace, error = %e, "applying the egress policies failed; the next change retries");
        }
    }
}

/// Runs until cancelled: every change to an egress policy of a namespace the agent made (a deletion, an
/// edit) has that namespace's policies checked again.
pub(crate) async fn run(
    config: Arc<AgentConfig>,
    egress: Arc<Egress>,
    desired: Arc<Desired>,
) -> anyhow::Result<()> {
    let api: Api<NetworkPolicy> = Api::all(config.client.clone());
    let writer = reflector::store::Writer::default();
    let store = writer.as_reader();
    // The reflector updates its store before it hands the event on, so the store holds the change.
    let watch = watcher(api, watcher::Config::default().labels(SELECTOR));
    let mut events = reflector::reflector(writer, watch).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let namespace = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::Delete(p)) => p.namespace(),
            _ => continue,
        };
        let Some(namespace) = namespace.filter(|ns| desired.has_namespace(ns)) else { continue };
        let found: Vec<Value> = store
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .filter_map(|p| serde_json::to_value(p.as_ref()).ok())
            .collect();
        if let Err(e) = keep(&config, &egress, &namespace, &found).await {
            tracing::warn!(%namespace, error = %e, "applying the egress policies failed; the next change retries");
        }
    }
    Ok(())
}

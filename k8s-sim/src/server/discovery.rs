//! API discovery: `/apis` and the resource lists `kubectl` and `kube` read to find the types served.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::Simulator;
use crate::store::ResourceType;

pub(super) async fn groups(State(sim): State<Simulator>) -> Json<Value> {
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

pub(super) fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
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

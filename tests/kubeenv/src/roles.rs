//! Plays CloudNativePG's declarative role management on the real API server, as the simulator does
//! (`k8s-sim/src/roles.rs`, which names the upstream sources): for each `Cluster` with `spec.managed.roles`,
//! once it is ready, `status.managedRolesStatus` (`byStatus`, `cannotReconcile`, `passwordStatus`) as the
//! instance manager of CloudNativePG v1.30.0 writes it (`api/v1/cluster_types.go`, `ManagedRoles`), from
//! the roles and their password Secrets. Re-evaluated on every change of a Cluster or of a user's Secret.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_sim::roles::{managed_roles_status, remove_missing};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

use crate::helpers::cnpg_cluster_resource;

/// Label of the agent's user Secrets (cluster-agent `render::users`).
const USER_LABEL: &str = "cp.example.com/user";

/// Runs until the control plane goes.
pub(crate) async fn run(admin: Client) {
    let clusters: Api<DynamicObject> = Api::all_with(admin.clone(), &cnpg_cluster_resource());
    let secrets: Api<Secret> = Api::all(admin.clone());
    let cluster_events = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(
            |c| async move { c.ok().map(|c| (c.namespace().unwrap_or_default(), Some(c.name_any()))) },
        )
        .boxed();
    let secret_events = watcher(secrets, watcher::Config::default().labels(USER_LABEL))
        .default_backoff()
        .touched_objects()
        .filter_map(|s| async move { s.ok().map(|s| (s.namespace().unwrap_or_default(), None)) })
        .boxed();
    let mut events = futures::stream::select(cluster_events, secret_events);
    while let Some((namespace, cluster)) = events.next().await {
        let api: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), &namespace, &cnpg_cluster_resource());
        let names = match cluster {
            Some(name) => vec![name],
            // A user's Secret changed: every Cluster of its namespace is looked at again.
            None => api
                .list(&Default::default())
                .await
                .map(|l| l.items.iter().map(|c| c.name_any()).collect())
                .unwrap_or_default(),
        };
        for name in names {
            if let Err(e) = reconcile(&admin, &namespace, &name).await {
                tracing::warn!(error = %e, cluster = %name, "writing a CloudNativePG managedRolesStatus failed");
            }
        }
    }
}

async fn reconcile(admin: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), namespace, &cnpg_cluster_resource());
    let Some(cluster) = api.get_opt(name).await? else { return Ok(()) };
    let cluster = serde_json::to_value(&cluster).unwrap_or_default();
    let roles = cluster["spec"]["managed"]["roles"].as_array().cloned().unwrap_or_default();
    let ready = cluster["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    let current = &cluster["status"]["managedRolesStatus"];
    if !cluster["metadata"]["deletionTimestamp"].is_null()
        || !ready
        || (roles.is_empty() && current.is_null())
    {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let mut found = std::collections::BTreeMap::new();
    for role in &roles {
        if let Some(secret) = role["passwordSecret"]["name"].as_str()
            && let Some(value) = secrets.get_opt(secret).await?
        {
            found.insert(secret.to_owned(), serde_json::to_value(value).unwrap_or_default());
        }
    }
    let status = managed_roles_status(&cluster, |secret| found.get(secret).cloned());
    if *current == status {
        return Ok(());
    }
    let mut patch = status;
    remove_missing(&mut patch, current);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"managedRolesStatus": patch}})),
    )
    .await?;
    Ok(())
}

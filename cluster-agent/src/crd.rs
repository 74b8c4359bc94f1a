//! `ManagedInstance`: an instance's desired state mirrored into its cluster, so operators see instances
//! with `kubectl get managedinstances` and a kube-runtime controller can reconcile them like any other
//! resource.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the control plane's custom resources.
pub const GROUP: &str = "cp.example.com";
/// Field manager of everything the agent applies.
pub const MANAGER: &str = "cluster-agent.cp.example.com";
/// Finalizer that keeps a ManagedInstance until its workloads are gone.
pub const FINALIZER: &str = "cp.example.com/cleanup";

/// Desired state of one managed-service instance, as the control plane decided it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cp.example.com",
    version = "v1alpha1",
    kind = "ManagedInstance",
    namespaced,
    status = "ManagedInstanceStatus",
    shortname = "mi",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedInstanceSpec {
    /// control-plane instance id
    pub instance_id: String,
    /// project
    pub project: String,
    /// service type: postgresql, mongodb, influxdb, grafana
    pub service: String,
    /// service version
    pub version: String,
    /// plan name
    pub plan: String,
    /// CPU per replica, millicores
    pub cpu_millis: u32,
    /// memory per replica, MiB
    pub memory_mib: u32,
    /// replicas
    pub replicas: u32,
    /// storage per replica, GiB
    pub storage_gib: u32,
    /// service configuration
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// the instance version this spec corresponds to (the desired generation)
    pub generation: u64,
    /// the instance version that last changed each aspect (absent from mirrors written before aspects
    /// were tracked: every aspect then counts as changed at `generation`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspects: Option<AspectGenerations>,
    /// source blocks allowed to connect (canonical CIDRs, sorted); empty: no access from outside the
    /// instance
    #[serde(default)]
    pub acl: Vec<String>,
    /// the backup the instance is to be restored from (the latest restore asked for)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreTarget>,
    /// PostgreSQL: the Barman server name to archive under since an upgrade to another major; absent: the
    /// instance's name (the plugin's default)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_server: Option<String>,
    /// the instance's per-application users, sorted by name (no passwords: the agent makes each in a
    /// Secret of the cluster, see `users`)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserTarget>,
}

/// One user of an instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserTarget {
    /// its name in the engine
    pub name: String,
    /// its role, from the service's catalog
    pub role: String,
    /// the instance version that last asked for it (its creation or its last password rotation)
    pub generation: u64,
}

/// A backup to load into an instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// the backup
    pub backup_id: String,
    /// its object's key in the backup bucket (for PostgreSQL, its base backup's path)
    pub location: String,
    /// PostgreSQL: the point in time to recover to (RFC 3339); absent: the backup as it was
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
}

impl ManagedInstanceSpec {
    /// The generation that last changed each aspect.
    pub fn aspect_generations(&self) -> AspectGenerations {
        self.aspects.unwrap_or(AspectGenerations {
            version: self.generation,
            resources: self.generation,
            configuration: self.generation,
            network_access: self.generation,
            credentials: 0,
            restore: 0,
            users: 0,
        })
    }
}

/// Per aspect, an instance version: the one that last changed it (spec) or the one applied (status).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AspectGenerations {
    /// service version
    pub version: u64,
    /// resources and storage
    pub resources: u64,
    /// configuration
    pub configuration: u64,
    /// ACL and endpoint
    pub network_access: u64,
    /// credentials (0: never rotated; absent from mirrors and statuses written before rotations)
    #[serde(default)]
    pub credentials: u64,
    /// restore (0: never restored)
    #[serde(default)]
    pub restore: u64,
    /// users (0: none ever created)
    #[serde(default)]
    pub users: u64,
}

impl From<AspectGenerations> for domain::instance::Generations {
    fn from(g: AspectGenerations) -> Self {
        Self {
            version: g.version,
            resources: g.resources,
            configuration: g.configuration,
            network_access: g.network_access,
            credentials: g.credentials,
            restore: g.restore,
            users: g.users,
        }
    }
}

impl From<domain::instance::Generations> for AspectGenerations {
    fn from(g: domain::instance::Generations) -> Self {
        Self {
            version: g.version,
            resources: g.resources,
            configuration: g.configuration,
            network_access: g.network_access,
            credentials: g.credentials,
            restore: g.restore,
            users: g.users,
        }
    }
}

/// A condition in the Kubernetes convention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// condition type, e.g. Ready
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown
    pub status: String,
    /// CamelCase reason
    pub reason: String,
    /// human-readable detail
    #[serde(default)]
    pub message: String,
    /// when status last changed (RFC 3339)
    pub last_transition_time: String,
    /// the metadata.generation it describes
    #[serde(default)]
    pub observed_generation: i64,
}

/// What the agent observed of the instance's workloads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedInstanceStatus {
    /// the desired generation fully applied and ready
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// Progressing, Ready or Failed
    #[serde(default)]
    pub phase: String,
    /// replicas ready
    #[serde(default)]
    pub ready_replicas: u32,
    /// version running
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// hash of the configuration applied
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// the configuration applied
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    /// failure reason
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// per aspect, the generation applied
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AspectGenerations>,
    /// the source blocks the instance's NetworkPolicy admits
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<String>>,
    /// where clients connect (`host:port`), once the cluster assigned an address
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// each object applied for `observedGeneration` (`Kind/name`, Secrets excluded) with the SHA-256 of its
    /// rendered form (`render::digest`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<BTreeMap<String, String>>,
    /// each user as the engine reports it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserStatus>>,
    /// conditions: Ready
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One user of an instance as its engine reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// its name
    pub name: String,
    /// the generation of it the engine has applied (0: not yet)
    pub generation: u64,
    /// why the engine cannot apply it
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The ManagedInstance that stands for `instance` at `version` (its instance version, which is the
/// object's `spec.generation`): what the mirror applies, and what a dry run renders. `None` for an
/// instance without a spec.
pub fn desired_object(
    instance: &domain::Instance,
    version: u64,
) -> serde_json::Result<Option<serde_json::Value>> {
    use serde_json::json;

    use crate::render::{INSTANCE_LABEL, PROJECT_LABEL, namespace};
    let Some(spec) = instance.spec() else { return Ok(None) };
    let config: serde_json::Map<String, serde_json::Value> = spec
        .config
        .iter()
        .map(|(k, v)| Ok((k.clone(), serde_json::to_value(v)?)))
        .collect::<serde_json::Result<_>>()?;
    let mut object = json!({
        "apiVersion": "cp.example.com/v1alpha1",
        "kind": "ManagedInstance",
        "metadata": {"name": spec.name, "namespace": namespace(&spec.project),
            "labels": {INSTANCE_LABEL: spec.id.to_string(), PROJECT_LABEL: spec.project,
                       "app.kubernetes.io/managed-by": "cp-cluster-agent"}},
        "spec": {
            "instanceId": spec.id.to_string(), "project": spec.project, "service": spec.service.as_str(),
            "version": spec.version, "plan": spec.plan, "cpuMillis": spec.resources.cpu_millis,
            "memoryMib": spec.resources.memory_mib, "replicas": spec.resources.replicas,
            "storageGib": spec.storage_gib, "config": config, "generation": version,
            "aspects": AspectGenerations::from(instance.generations()),
            "acl": spec.acl.iter().map(|e| e.cidr.as_str()).collect::<Vec<_>>(),
        },
    });
    if !spec.users.is_empty() {
        object["spec"]["users"] = json!(
            spec.users
                .iter()
                .map(|u| json!({"name": u.name, "role": u.role, "generation": u.generation}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(server) = &spec.archive_server {
        object["spec"]["archiveServer"] = json!(server);
    }
    if let Some(restore) = &spec.restore {
        object["spec"]["restore"] =
            json!({"backupId": restore.backup_id.to_string(), "location": restore.location});
        if let Some(time) = restore.target_time {
            // To the microsecond, PostgreSQL's precision: truncated to the second, a fork lost the commits
            // of the target's second before it. A whole second still reads `…:00Z`. CloudNativePG parses
            // RFC 3339 with or without a fraction (cloudnative-pg/machinery v0.5.0
            // `pkg/postgres/time/time.go`, `ConvertToPostgresFormat`: RFC3339Micro, then RFC3339).
            let time = chrono::SubsecRound::trunc_subsecs(time, 6);
            object["spec"]["restore"]["targetTime"] =
                json!(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }
    Ok(Some(object))
}

//! Rendering: the Kubernetes objects an instance needs, as pure functions of its ManagedInstance.
//!
//! PostgreSQL is a CloudNativePG `postgresql.cnpg.io/v1` `Cluster` (CloudNativePG 1.30, whose CRD the tests install); MongoDB, InfluxDB
//! and Grafana are a StatefulSet, a headless Service and a ConfigMap, plus a Secret with generated
//! credentials that the agent creates once in the cluster and never overwrites (credentials never enter
//! an event). All objects live in the ManagedInstance's namespace (one per project), are named after the
//! instance and carry the instance's labels; none is owned by the ManagedInstance (see `metadata`).

use std::collections::BTreeMap;

use kube::ResourceExt as _;
use serde_json::{Value, json};

pub use applied::{first_difference, is_applied, quantities_equal};
mod applied;
pub mod backup;
pub mod barman;
pub mod digest;
pub mod egress;
pub mod job;
pub mod network;
pub mod pg_settings;
pub mod replset;
pub mod rotation;
pub mod token_scripts;
pub mod user_tokens;
pub mod users;
pub mod workload;

use crate::crd::{MANAGER, ManagedInstance};

/// Label holding the instance id; selects everything the agent owns for one instance.
pub const INSTANCE_LABEL: &str = "cp.example.com/instance-id";
/// Label holding the project.
pub const PROJECT_LABEL: &str = "cp.example.com/project";
/// Label holding the desired generation at which the object's content last changed.
pub const GENERATION_LABEL: &str = "cp.example.com/generation";
/// Annotation carrying the hash of the configuration an object was rendered with: on a StatefulSet's pod
/// template (so its pods carry the configuration they started with) and on a CloudNativePG Cluster.
pub const CONFIG_HASH_ANNOTATION: &str = "cp.example.com/config-hash";
/// Selector of everything the agent manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=cp-cluster-agent";

/// Namespace of a project's instances.
pub fn namespace(project: &str) -> String {
    format!("cp-{project}")
}

/// Hash of a configuration, as reported in observed state and pod-template annotations.
pub fn config_hash(config: &BTreeMap<String, Value>) -> String {
    domain::observed::config_hash(config)
}

/// The kind of child object, for lookups and request accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// apps/v1 StatefulSet
    StatefulSet,
    /// v1 Service
    Service,
    /// v1 ConfigMap
    ConfigMap,
    /// v1 Secret (created once, never updated)
    Secret,
    /// postgresql.cnpg.io/v1 Cluster
    PostgresCluster,
    /// networking.k8s.io/v1 NetworkPolicy
    NetworkPolicy,
    /// batch/v1 Job (a credentials rotation; see `rotation`)
    Job,
    /// barmancloud.cnpg.io/v1 ObjectStore (where a PostgreSQL instance archives; see `barman`)
    ObjectStore,
}

impl ChildKind {
    /// The kind name.
    pub fn kind(self) -> &'static str {
        match self {
            Self::StatefulSet => "StatefulSet",
            Self::Service => "Service",
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
            Self::PostgresCluster => "Cluster",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::Job => "Job",
            Self::ObjectStore => "ObjectStore",
        }
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// its kind
    pub kind: ChildKind,
    /// its name
    pub name: String,
    /// the object
    pub object: Value,
}

fn labels(mi: &ManagedInstance) -> Value {
    json!({
        "app.kubernetes.io/name": mi.spec.service,
        "app.kubernetes.io/instance": mi.name_any(),
        "app.kubernetes.io/managed-by": "cp-cluster-agent",
        "app.kubernetes.io/part-of": "cp",
        INSTANCE_LABEL: mi.spec.instance_id,
        PROJECT_LABEL: mi.spec.project,
        GENERATION_LABEL: mi.spec.generation.to_string(),
    })
}

fn selector(mi: &ManagedInstance) -> Value {
    json!({"app.kubernetes.io/instance": mi.name_any(), INSTANCE_LABEL: mi.spec.instance_id})
}

/// No owner references: the ManagedInstance mirrors the control plane's desired state and is never the
/// authority to destroy data. Were it the owner, the garbage collector would delete the workload, its
/// CloudNativePG cluster (and with it the cluster's volumes) and the credentials whenever someone deleted
/// the mirror. Objects belong to their instance by [`INSTANCE_LABEL`]; the agent deletes them only when
/// the control plane deprovisions the instance.
pub(crate) fn metadata(mi: &ManagedInstance, name: &str) -> Value {
    json!({"name": name, "namespace": mi.namespace(), "labels": labels(mi)})
}

fn resources(mi: &ManagedInstance) -> Value {
    let cpu = format!("{}m", mi.spec.cpu_millis);
    let memory = format!("{}Mi", mi.spec.memory_mib);
    json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}})
}

/// A catalog parameter as the PostgreSQL setting CloudNativePG writes into `postgresql.conf`. The catalog
/// names carry their unit (`work_mem_kib`); PostgreSQL's settings do not, and refuse an unknown name at
/// start, so each is renamed and given its unit explicitly (PostgreSQL docs, *Server Configuration*:
/// `work_mem` is in kB, `log_min_duration_statement` in ms, -1 disables it).
fn postgres_parameter(name: &str, value: &Value) -> (String, String) {
    match name {
        "work_mem_kib" => ("work_mem".into(), format!("{}kB", scalar(value))),
        "log_min_duration_statement_ms" if value.as_i64() == Some(-1) => {
            ("log_min_duration_statement".into(), "-1".into())
        }
        "log_min_duration_statement_ms" => {
            ("log_min_duration_statement".into(), format!("{}ms", scalar(value)))
        }
        _ => (name.to_owned(), scalar(value)),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The port each service listens on (the Service's and the container's).
pub fn service_port(service: &str) -> u16 {
    match service {
        "postgresql" => POSTGRES_PORT,
        "mongodb" => 27017,
        "influxdb" => 8086,
        _ => 3000,
    }
}

/// The user each service's entrypoint creates with the generated password; what a customer connects as.
pub fn admin_user(service: &str) -> Option<&'static str> {
    match service {
        "mongodb" => Some("root"),
        "influxdb" | "grafana" => Some("admin"),
        _ => None,
    }
}

/// Name of the generated credentials Secret.
pub fn credentials_name(mi: &ManagedInstance) -> String {
    format!("{}-credentials", mi.name_any())
}

/// The objects `mi` needs, except the credentials Secret (see [`credentials`]); with the cluster's
/// backup store, a PostgreSQL instance archives to it (see [`barman`]).
pub fn render(mi: &ManagedInstance, store: Option<&backup::StoreTarget>) -> Vec<Child> {
    let name = mi.name_any();
    let hash = config_hash(&mi.spec.config);
    if mi.spec.service == "postgresql" {
        // `data_checksums` is chosen when the database is created: CloudNativePG's
        // `bootstrap.initdb.dataChecksums` (v1.30.0 api/v1/cluster_types.go, BootstrapInitDB), not a
        // setting. The catalog makes it immutable, so the bootstrap section never changes afterwards.
        let parameters: BTreeMap<String, String> = mi
            .spec
            .config
            .iter()
            .filter(|(k, _)| k.as_str() != "data_checksums")
            .map(|(k, v)| postgres_parameter(k, v))
            .collect();
        let mut object = json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": metadata(mi, &name),
            "spec": {
                "instances": mi.spec.replicas,
                "imageName": format!("ghcr.io/cloudnative-pg/postgresql:{}", mi.spec.version),
                "storage": {"size": format!("{}Gi", mi.spec.storage_gib)},
                "resources": resources(mi),
                "postgresql": {"parameters": &parameters},
                "inheritedMetadata": {"labels": selector(mi)},
            }
        });
        if let Some(checksums) = mi.spec.config.get("data_checksums").and_then(Value::as_bool) {
            object["spec"]["bootstrap"] = json!({"initdb": {"dataChecksums": checksums}});
        }
        object["metadata"]["annotations"] = json!({CONFIG_HASH_ANNOTATION: hash});
        let roles = users::postgres_roles(mi);
        if !roles.is_empty() {
            object["spec"]["managed"] = json!({"roles": roles});
        }
        // Made from a backup, the recovery replaces the initdb bootstrap.
        let stores = barman::archive_and_recover(mi, &mut object, store);
        let mut children = vec![Child { kind: ChildKind::PostgresCluster, name, object }];
        children.extend(pg_settings::job(mi, &parameters));
        children.extend(stores);
        children.extend(network::render(mi, POSTGRES_PORT));
        return children;
    }
    let w = workload::workload(mi);
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(mi, &format!("{name}-config")),
        "data": {w.config_file: w.config_text},
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": metadata(mi, &name),
        "spec": {"clusterIP": "None", "selector": selector(mi), "ports": [{"name": mi.spec.service, "port": w.port, "targetPort": w.port}]},
    });
    let mut volumes = vec![json!({"name": "config", "configMap": {"name": format!("{name}-config")}})];
    let mut mounts = vec![
        json!({"name": "data", "mountPath": w.data_path}),
        json!({"name": "config", "mountPath": w.config_path}),
    ];
    for (volume, mount) in w.volumes {
        volumes.push(volume);
        mounts.push(mount);
    }
    let mut container = json!({
        "name": mi.spec.service,
        "image": w.image,
        "ports": [{"containerPort": w.port, "name": mi.spec.service}],
        "resources": resources(mi),
        "env": w.env,
        "volumeMounts": mounts,
        "readinessProbe": w.readiness,
    });
    if let Some(args) = w.args {
        container["args"] = args;
    }
    let mut pod = json!({"containers": [container], "volumes": volumes});
    if let Some(security) = w.pod_security {
        pod["securityContext"] = security;
    }
    let statefulset = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(mi, &name),
        "spec": {
            "replicas": mi.spec.replicas,
            "serviceName": name,
            "selector": {"matchLabels": selector(mi)},
            "template": {
                "metadata": {"labels": selector(mi), "annotations": {CONFIG_HASH_ANNOTATION: hash}},
                "spec": pod,
            },
            // The data volumes outlive the set: a hand-deleted set, or the garbage collector acting on a
            // deleted owner, must not take the data with it. They go only when the control plane
            // deprovisions the instance (the agent deletes them after the set, see `cleanup`). Scaling down
            // keeps them too, so scaling up again finds the data. (apps/v1
            // StatefulSetPersistentVolumeClaimRetentionPolicy, GA in Kubernetes 1.32.)
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": format!("{}Gi", mi.spec.storage_gib)}}},
            }],
        },
    });
    let mut statefulset = statefulset;
    let generation = mi.spec.aspect_generations().restore;
    if mi.spec.service == "grafana"
        && generation > 0
        && let Some(restore) = &mi.spec.restore
    {
        let pod = &mut statefulset["spec"]["template"];
        let reset = backup::grafana_reset_admin_password(&pod["spec"]["containers"][0]);
        pod["spec"]["initContainers"] =
            json!([backup::grafana_restore(mi, generation, &restore.location), reset]);
        pod["metadata"]["annotations"]["cp.example.com/restore-generation"] = json!(generation.to_string());
    }
    let mut service = service;
    let mongodb = mi.spec.service == "mongodb";
    if mongodb {
        replica_set_member(mi, &mut statefulset, &mut service);
    }
    let mut children = vec![
        Child { kind: ChildKind::ConfigMap, name: format!("{name}-config"), object: config_map },
        Child { kind: ChildKind::Service, name: name.clone(), object: service },
        Child { kind: ChildKind::StatefulSet, name, object: statefulset },
    ];
    if mongodb {
        children.push(replset::job(mi));
    }
    children.extend(network::render(mi, w.port));
    children
}

/// Makes MongoDB's StatefulSet and headless Service those of a replica set's members (see [`replset`]).
fn replica_set_member(mi: &ManagedInstance, statefulset: &mut Value, service: &mut Value) {
    // Members find each other before they are ready (the set is initiated once they run).
    service["spec"]["publishNotReadyAddresses"] = json!(true);
    let spec = &mut statefulset["spec"];
    // A removed member's data is of no use to a member added later, which makes its own by initial sync
    // from the primary (MongoDB manual, *Replica Set Data Synchronization*); a stale copy would leave it
    // too stale to catch up. The members leave the configuration before their pods go
    // (`replset::hold_scale_down`), so the claims of scaled-away pods are deleted with them.
    spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = json!("Delete");
    let pod = &mut spec["template"]["spec"];
    let image = pod["containers"][0]["image"].clone();
    let (volumes, mount) = replset::keyfile_volumes(mi);
    pod["volumes"].as_array_mut().expect("rendered above").extend(volumes);
    pod["initContainers"] = json!([replset::keyfile_init_container(image.as_str().unwrap_or_default())]);
    let container = &mut pod["containers"][0];
    container["volumeMounts"].as_array_mut().expect("rendered above").push(mount);
    container["command"] = replset::mongod_command();
    container["args"].as_array_mut().expect("mongod is given its config file").extend(replset::mongod_args());
}

/// PostgreSQL's port under CloudNativePG (v1.30.0 `pkg/postgres/configuration.go`: `ServerPort = 5432`).
const POSTGRES_PORT: u16 = 5432;

/// A StatefulSet's volumeClaimTemplates cannot change once it exists (the apiserver refuses the whole
/// update), so the desired object keeps the templates the set was created with: storage grows by
/// expanding each claim instead (see [`claim_needs_expansion`]). Applying the templates unchanged, rather
/// than leaving them out, keeps this field manager from asking the apiserver to remove them.
pub fn keep_claim_templates(desired: &mut Child, current: &Value) {
    if desired.kind == ChildKind::StatefulSet
        && let Some(templates) = current["spec"].get("volumeClaimTemplates")
    {
        desired.object["spec"]["volumeClaimTemplates"] = templates.clone();
    }
}

/// Whether the instance's claims are grown by the agent (StatefulSet services; CloudNativePG resizes
/// its own claims from the Cluster's storage size).
pub fn expands_claims(mi: &ManagedInstance) -> bool {
    mi.spec.service != "postgresql"
}

/// The claim size the instance wants, as applied to a claim's request.
pub fn claim_size(mi: &ManagedInstance) -> String {
    format!("{}Gi", mi.spec.storage_gib)
}

/// Whether a claim requesting `requested` must be grown for `mi`. An unreadable quantity is left alone
/// (and reported by [`claim_is_expanded`] as not ready) rather than overwritten.
pub fn claim_needs_expansion(mi: &ManagedInstance, requested: &str) -> bool {
    quantity_bytes(requested).is_some_and(|bytes| bytes < gib_bytes(mi.spec.storage_gib))
}

/// Whether a claim with `capacity` holds the storage `mi` wants.
pub fn claim_is_expanded(mi: &ManagedInstance, capacity: Option<&str>) -> bool {
    capacity.and_then(quantity_bytes).is_some_and(|bytes| bytes >= gib_bytes(mi.spec.storage_gib))
}

fn gib_bytes(gib: u32) -> u128 {
    u128::from(gib) << 30
}

/// Bytes of a Kubernetes quantity: `10Gi`, `500M`, `1.5Ti`, `1073741824`, `1e9`. `None` for anything
/// else (milli-units and the like never describe storage).
pub fn quantity_bytes(quantity: &str) -> Option<u128> {
    let split = quantity.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    let bytes = (number * factor).ceil();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u128)
}

/// The credentials Secret with a fresh random password, for services that need one. Created only when
/// absent; never applied again, so the password stays what the workload was initialised with until a
/// rotation (`rotation`) changes both. A fresh password answers every rotation asked so far, which its
/// annotation records.
pub fn credentials(mi: &ManagedInstance, password: &str) -> Option<Child> {
    if mi.spec.service == "postgresql" {
        return None; // CloudNativePG generates its own secrets
    }
    let name = credentials_name(mi);
    let mut object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata(mi, &name), "type": "Opaque",
        "stringData": {"password": password}});
    // The generation label would change on every update; a Secret is written once.
    object["metadata"]["labels"].as_object_mut().map(|l| l.remove(GENERATION_LABEL));
    object["metadata"]["annotations"] = json!({
        rotation::GENERATION_ANNOTATION: mi.spec.aspect_generations().credentials.to_string()
    });
    Some(Child { kind: ChildKind::Secret, name, object })
}

/// The Secrets the agent makes once for `mi`, when absent, and never applies again: the credentials
/// (with `password`) and, for MongoDB, the replica set's keyfile (with `key`, see [`replset`]).
pub fn secrets_made_once(mi: &ManagedInstance, password: &str, key: &str) -> Vec<Child> {
    let mut secrets: Vec<Child> = credentials(mi, password).into_iter().collect();
    if mi.spec.service == "mongodb" {
        secrets.push(replset::keyfile_secret(mi, key));
    }
    secrets
}

/// Whether an object still carries an owner reference (written by agents before objects stopped being
/// owned by their ManagedInstance): applying it again removes the reference, which this field manager
/// owns.
pub fn has_owner_references(actual: &Value) -> bool {
    actual["metadata"]["ownerReferences"].as_array().is_some_and(|r| !r.is_empty())
}

/// The field manager's apply parameters.
pub fn apply_params() -> kube::api::PatchParams {
    kube::api::PatchParams::apply(MANAGER).force()
}

#[cfg(test)]
mod tests {
    use domain::{Catalog, ServiceType, catalog::ConfigKind};
    use serde_json::json;

    use super::postgres_parameter;

    /// PostgreSQL refuses to start on a setting it does not know, so every catalog parameter must render
    /// to one of these (names confirmed in PostgreSQL's *Server Configuration* docs). A new catalog
    /// parameter fails here until its PostgreSQL name is confirmed and added.
    #[test]
    fn every_postgresql_catalog_parameter_renders_to_a_postgresql_setting() {
        let known =
            ["max_connections", "work_mem", "log_min_duration_statement", "track_io_timing", "wal_level"];
        for key in Catalog::builtin()
            .offering(ServiceType::Postgresql)
            .unwrap()
            .config_keys
            .iter()
            .filter(|k| k.name != "data_checksums")
        {
            let value = match &key.kind {
                ConfigKind::Integer { max, .. } => json!(max),
                ConfigKind::Boolean => json!(true),
                ConfigKind::OneOf { values } => json!(values[0]),
            };
            let (name, _) = postgres_parameter(&key.name, &value);
            assert!(
                known.contains(&name.as_str()),
                "{} renders to {name}, not a known PostgreSQL setting",
                key.name
            );
        }
        assert_eq!(postgres_parameter("work_mem_kib", &json!(4096)), ("work_mem".into(), "4096kB".into()));
        let off = postgres_parameter("log_min_duration_statement_ms", &json!(-1));
        assert_eq!(off, ("log_min_duration_statement".into(), "-1".into()));
    }
}

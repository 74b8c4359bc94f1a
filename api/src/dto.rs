//! Wire types of the REST API. Separate from the domain's types on purpose: the API's JSON is a contract
//! with clients, the domain's serde form is the event log's, and each changes on its own schedule.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{ConfigValue, ServiceType, instance::InstanceSpec};
use projections::{InstanceView, OperationKind, OperationState, OperationView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// A managed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// PostgreSQL
    Postgresql,
    /// MongoDB
    Mongodb,
    /// InfluxDB
    Influxdb,
    /// Grafana
    Grafana,
}

impl From<Service> for ServiceType {
    fn from(s: Service) -> Self {
        match s {
            Service::Postgresql => Self::Postgresql,
            Service::Mongodb => Self::Mongodb,
            Service::Influxdb => Self::Influxdb,
            Service::Grafana => Self::Grafana,
        }
    }
}

impl From<ServiceType> for Service {
    fn from(s: ServiceType) -> Self {
        match s {
            ServiceType::Postgresql => Self::Postgresql,
            ServiceType::Mongodb => Self::Mongodb,
            ServiceType::Influxdb => Self::Influxdb,
            ServiceType::Grafana => Self::Grafana,
        }
    }
}

/// Body of `POST /v1/projects/{project}/instances`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// name, unique in the project; a DNS-1123 label. Immutable.
    #[schema(example = "orders-db")]
    pub name: String,
    /// service type. Immutable.
    pub service: Service,
    /// service version, from the catalog
    #[schema(example = "16")]
    pub version: String,
    /// plan, from the catalog
    #[schema(example = "standard")]
    pub plan: String,
    /// storage in GiB; defaults to the plan's. Grows only.
    #[serde(default)]
    pub storage_gib: Option<u32>,
    /// service configuration: key to boolean, integer or string
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, Object>)]
    pub config: BTreeMap<String, Value>,
    /// free text, at most 256 characters
    #[serde(default)]
    pub description: String,
    /// when true, DELETE is refused with 409
    #[serde(default)]
    pub deletion_protection: bool,
    /// cluster to place the instance on; chosen by the placement rule when absent. Immutable.
    #[serde(default)]
    pub cluster: Option<String>,
    /// region to place the instance in, when `cluster` is absent
    #[serde(default)]
    pub region: Option<String>,
}

/// Body of `PATCH /v1/projects/{project}/instances/{id}`: a JSON merge patch. Absent (or null) fields are
/// left as they are; within `config`, a null value removes the key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// new version (upgrade only)
    #[serde(default)]
    pub version: Option<String>,
    /// new plan
    #[serde(default)]
    pub plan: Option<String>,
    /// new storage in GiB (grow only)
    #[serde(default)]
    pub storage_gib: Option<u32>,
    /// configuration changes; null removes a key
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub config: Option<BTreeMap<String, Value>>,
    /// new description
    #[serde(default)]
    pub description: Option<String>,
    /// new deletion protection
    #[serde(default)]
    pub deletion_protection: Option<bool>,
    #[serde(default)]
    #[schema(ignore)]
    name: Option<Value>,
    #[serde(default)]
    #[schema(ignore)]
    service: Option<Value>,
    #[serde(default)]
    #[schema(ignore)]
    cluster: Option<Value>,
}

impl UpdateRequest {
    /// Refuses changes to fields that are fixed at provisioning.
    pub fn check_immutable(&self) -> Result<(), ApiError> {
        let named = [("name", &self.name), ("service", &self.service), ("cluster", &self.cluster)];
        match named.into_iter().find(|(_, v)| v.is_some()) {
            Some((field, _)) => Err(ApiError::field(
                format!("/{field}"),
                "immutable",
                format!(
                    "{field} is fixed when the instance is provisioned; provision a new instance to change it"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Converts one configuration value, naming the key on failure.
pub fn config_value(key: &str, value: &Value) -> Result<ConfigValue, ApiError> {
    match value {
        Value::Bool(b) => Ok(ConfigValue::Bool(*b)),
        Value::Number(n) if n.is_i64() => Ok(ConfigValue::Int(n.as_i64().unwrap_or_default())),
        Value::String(s) => Ok(ConfigValue::Text(s.clone())),
        _ => Err(ApiError::field(
            format!("/config/{key}"),
            "scalar",
            "configuration values are booleans, integers or strings",
        )),
    }
}

fn config_json(config: &BTreeMap<String, ConfigValue>) -> BTreeMap<String, Value> {
    config
        .iter()
        .map(|(k, v)| {
            let value = match v {
                ConfigValue::Bool(b) => Value::Bool(*b),
                ConfigValue::Int(i) => Value::from(*i),
                ConfigValue::Text(s) => Value::String(s.clone()),
            };
            (k.clone(), value)
        })
        .collect()
}

/// Compute resources per replica.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Resources {
    /// CPU in millicores
    pub cpu_millis: u32,
    /// memory in MiB
    pub memory_mib: u32,
    /// replicas
    pub replicas: u32,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// provisioned
    Active,
    /// deprovisioning began
    Deprovisioning,
}

/// An instance: everything that was set (so `terraform import` can rebuild it) plus computed fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Instance {
    /// server-assigned id (UUIDv7)
    pub id: Uuid,
    /// project
    pub project: String,
    /// name
    pub name: String,
    /// service type
    pub service: Service,
    /// service version
    pub version: String,
    /// plan
    pub plan: String,
    /// resources of the plan (computed)
    pub resources: Resources,
    /// storage in GiB
    pub storage_gib: u32,
    /// configuration
    #[schema(value_type = BTreeMap<String, Object>)]
    pub config: BTreeMap<String, Value>,
    /// description
    pub description: String,
    /// whether DELETE is refused
    pub deletion_protection: bool,
    /// cluster the instance is placed on
    pub cluster: String,
    /// lifecycle state
    pub lifecycle: Lifecycle,
    /// version of the instance's desired state; also its ETag
    pub instance_version: u64,
    /// desired state compared with what the cluster's agent observed
    pub status: InstanceStatus,
    /// what the cluster's agent last reported, once it has
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// the last drift the cluster's agent healed, if any
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<Drift>,
    /// when it was provisioned
    pub created_at: DateTime<Utc>,
    /// when it last changed
    pub updated_at: DateTime<Utc>,
}

impl From<&InstanceView> for Instance {
    fn from(view: &InstanceView) -> Self {
        let spec: &InstanceSpec = view.spec();
        Self {
            id: spec.id,
            project: spec.project.clone(),
            name: spec.name.clone(),
            service: spec.service.into(),
            version: spec.version.clone(),
            plan: spec.plan.clone(),
            resources: Resources {
                cpu_millis: spec.resources.cpu_millis,
                memory_mib: spec.resources.memory_mib,
                replicas: spec.resources.replicas,
            },
            storage_gib: spec.storage_gib,
            config: config_json(&spec.config),
            description: spec.description.clone(),
            deletion_protection: spec.deletion_protection,
            cluster: spec.cluster.clone(),
            lifecycle: match view.instance.lifecycle() {
                domain::Lifecycle::Deprovisioning => Lifecycle::Deprovisioning,
                _ => Lifecycle::Active,
            },
            instance_version: view.version,
            status: InstanceStatus::from(&view.status),
            observed: view.observed.as_ref().map(|o| Observed {
                phase: match o.phase {
                    domain::observed::ObservedPhase::Progressing => "progressing",
                    domain::observed::ObservedPhase::Ready => "ready",
                    domain::observed::ObservedPhase::Failed => "failed",
                }
                .to_owned(),
                observed_generation: o.observed_generation,
                ready_replicas: o.ready_replicas,
                desired_replicas: o.desired_replicas,
                running_version: o.running_version.clone(),
                config_hash: o.config_hash.clone(),
                reason: o.reason.clone(),
                reported_at: view.observed_at,
            }),
            last_drift: view.last_drift.as_ref().map(|d| Drift { at: d.at, objects: d.objects.clone() }),
            created_at: view.created_at,
            updated_at: view.updated_at,
        }
    }
}

/// Health of an instance or of one of its aspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// desired equals observed
    Healthy,
    /// desired differs from observed; being applied
    Reconciling,
    /// the cluster reports a failure; see `reason`
    Error,
}

impl From<projections::Health> for Health {
    fn from(h: projections::Health) -> Self {
        match h {
            projections::Health::Healthy => Self::Healthy,
            projections::Health::Reconciling => Self::Reconciling,
            projections::Health::Error => Self::Error,
        }
    }
}

impl From<Health> for projections::Health {
    fn from(h: Health) -> Self {
        match h {
            Health::Healthy => Self::Healthy,
            Health::Reconciling => Self::Reconciling,
            Health::Error => Self::Error,
        }
    }
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Condition {
    /// Ready, VersionApplied, ResourcesApplied, ConfigurationApplied or Deleted
    #[serde(rename = "type")]
    pub condition_type: String,
    /// True, False or Unknown
    pub status: String,
    /// CamelCase reason
    pub reason: String,
    /// detail
    pub message: String,
    /// when `status` last changed
    pub last_transition_time: DateTime<Utc>,
    /// desired generation described
    pub observed_generation: u64,
}

/// Desired compared with observed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceStatus {
    /// overall: error if the cluster reports a failure, reconciling if any aspect is, else healthy
    pub state: Health,
    /// per aspect: version, resources, configuration (and deletion while deprovisioning)
    pub aspects: BTreeMap<String, Health>,
    /// failure reason reported by the cluster
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ready plus one condition per aspect
    pub conditions: Vec<Condition>,
}

impl From<&projections::Status> for InstanceStatus {
    fn from(s: &projections::Status) -> Self {
        Self {
            state: s.state.into(),
            aspects: s.aspects.iter().map(|(a, h)| (a.as_str().to_owned(), (*h).into())).collect(),
            reason: s.reason.clone(),
            conditions: s
                .conditions
                .iter()
                .map(|c| Condition {
                    condition_type: c.condition_type.to_owned(),
                    status: c.status.to_owned(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time,
                    observed_generation: c.observed_generation,
                })
                .collect(),
        }
    }
}

/// Objects of the instance that were changed or deleted in its cluster outside the control plane, and
/// that the agent put back (a hand-edited StatefulSet, a deleted ManagedInstance).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Drift {
    /// when the agent reported it
    pub at: DateTime<Utc>,
    /// the objects, as `Kind/name`
    pub objects: Vec<String>,
}

/// What the cluster's agent last reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Observed {
    /// progressing, ready or failed
    pub phase: String,
    /// desired generation fully applied and ready
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// replicas ready
    pub ready_replicas: u32,
    /// replicas desired
    pub desired_replicas: u32,
    /// service version running
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// hash of the configuration applied
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// failure reason
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// when the agent reported it
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

/// A page of instances.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceList {
    /// instances in creation order
    pub items: Vec<Instance>,
    /// pass as `page_token` to get the next page; absent on the last page
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationType {
    /// creates an instance
    Provision,
    /// changes an instance
    Update,
    /// removes an instance
    Deprovision,
}

impl From<OperationKind> for OperationType {
    fn from(kind: OperationKind) -> Self {
        match kind {
            OperationKind::Provision => Self::Provision,
            OperationKind::Update => Self::Update,
            OperationKind::Deprovision => Self::Deprovision,
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// accepted, not yet acted on
    Pending,
    /// being carried out
    InProgress,
    /// done
    Succeeded,
    /// failed; see `error`
    Failed,
}

/// Why an operation failed, in the manner of the Open Service Broker API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperationError {
    /// problem code
    pub code: String,
    /// what happened
    pub detail: String,
    /// the reason the cluster's agent reported (e.g. CrashLoopBackOff)
    pub reason: String,
    /// whether the instance can still be used
    pub instance_usable: bool,
    /// whether repeating the update may succeed
    pub update_repeatable: bool,
}

/// An asynchronous operation on an instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Operation {
    /// operation id
    pub id: Uuid,
    /// what it does
    #[serde(rename = "type")]
    pub operation_type: OperationType,
    /// where it is
    pub state: OperationStatus,
    /// the instance it acts on
    pub instance_id: Uuid,
    /// the instance version it produced
    pub instance_version: u64,
    /// when it was accepted
    pub created_at: DateTime<Utc>,
    /// why it failed, when it did
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

impl From<&OperationView> for Operation {
    fn from(op: &OperationView) -> Self {
        Self {
            id: op.id,
            operation_type: op.kind.into(),
            state: match op.state {
                OperationState::InProgress => OperationStatus::InProgress,
                OperationState::Succeeded => OperationStatus::Succeeded,
                OperationState::Failed { .. } => OperationStatus::Failed,
            },
            instance_id: op.instance_id,
            instance_version: op.instance_version,
            created_at: op.created_at,
            error: match &op.state {
                OperationState::Failed { reason, instance_usable, update_repeatable } => {
                    Some(OperationError {
                        code: "apply_failed".into(),
                        detail: format!("the cluster reports {reason}"),
                        reason: reason.clone(),
                        instance_usable: *instance_usable,
                        update_repeatable: *update_repeatable,
                    })
                }
                _ => None,
            },
        }
    }
}

/// Body of `PUT /v1/admin/clusters/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRequest {
    /// region of the cluster
    #[schema(example = "eu-central")]
    pub region: String,
}

/// A registered cluster.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cluster {
    /// name
    pub name: String,
    /// region
    pub region: String,
}

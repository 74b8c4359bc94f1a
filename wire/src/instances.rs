//! Instances: what clients send to provision and change one, and what they read back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{ConfigValue, ServiceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldError;

use super::{AclEntry, Connection, Drift, InstanceStatus, Observed};

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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    #[serde(default, deserialize_with = "integral_u32")]
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
    /// network ACL: who may connect (a set, at most 100 entries). Empty or absent: nothing outside the
    /// instance, and no endpoint. Change it later at `…/acl`.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub acl: Vec<AclEntry>,
    /// must be true for `0.0.0.0/0` or `::/0` in `acl`
    #[serde(default)]
    pub allow_public: bool,
    /// region to place the instance in, when `cluster` is absent
    #[serde(default)]
    pub region: Option<String>,
    /// what the new instance starts from: a backup of the project (of a live or a deprovisioned
    /// instance), or for PostgreSQL an instance of the project and a point in time in its recoverable
    /// window (a fork)
    #[serde(default)]
    pub restore_from: Option<RestoreFrom>,
    /// the weekly maintenance window, in which restart-mode configuration changes are applied; the
    /// platform's default (Sunday 02:00 UTC, 240 minutes) when absent
    #[serde(default)]
    pub maintenance_window: Option<MaintenanceWindow>,
}

/// What a new instance starts from: `backup_id`, or `instance_id` with `point_in_time` (PostgreSQL).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreFrom {
    /// a completed backup of the same service, of the same or an older version
    #[serde(default)]
    pub backup_id: Option<uuid::Uuid>,
    /// PostgreSQL: the instance to fork (live, or deprovisioned while its backups are kept)
    #[serde(default)]
    pub instance_id: Option<uuid::Uuid>,
    /// PostgreSQL: the moment to recover to (RFC 3339), within the source's recoverable window: from the
    /// end of its oldest kept base backup to now (to its removal, once deprovisioned)
    #[serde(default)]
    pub point_in_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// The backup an instance was restored from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestoredFrom {
    /// the backup
    pub backup_id: uuid::Uuid,
    /// the instance the backup is of
    pub source_instance_id: uuid::Uuid,
    /// a fork's point in time
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which backup to restore from (`POST …/instances/{id}/restore`, or `restore_from` of a provision).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// a completed backup of the same service, of the same or an older version
    pub backup_id: uuid::Uuid,
}

/// Body of `PATCH /v1/projects/{project}/instances/{id}`: a JSON merge patch. Absent (or null) fields are
/// left as they are; within `config`, a null value removes the key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// new version (upgrade only)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// new plan
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// new storage in GiB (grow only)
    #[serde(default, deserialize_with = "integral_u32", skip_serializing_if = "Option::is_none")]
    pub storage_gib: Option<u32>,
    /// configuration changes; null removes a key
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub config: Option<BTreeMap<String, Value>>,
    /// new description
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// new deletion protection
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection: Option<bool>,
    /// new maintenance window (the whole window)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    name: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    service: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    cluster: Option<Value>,
}

impl UpdateRequest {
    /// Refuses changes to fields that are fixed at provisioning.
    pub fn check_immutable(&self) -> Result<(), FieldError> {
        let named = [("name", &self.name), ("service", &self.service), ("cluster", &self.cluster)];
        match named.into_iter().find(|(_, v)| v.is_some()) {
            Some((field, _)) => Err(FieldError::new(
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

/// An optional `u32` that also accepts a number written with a zero fraction (`20.0`): JSON has one
/// number type, and JSON Schema's `integer` includes such numbers.
fn integral_u32<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(n) = number.as_u64() {
        return u32::try_from(n).map(Some).map_err(|_| D::Error::custom("must be at most 4294967295"));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => Ok(Some(f as u32)),
        _ => Err(D::Error::custom(format!("must be a whole number from 0 to {}, not {number}", u32::MAX))),
    }
}

/// Converts one configuration value, naming the key on failure.
pub fn config_value(key: &str, value: &Value) -> Result<ConfigValue, FieldError> {
    match value {
        Value::Bool(b) => Ok(ConfigValue::Bool(*b)),
        Value::Number(n) if n.is_i64() => Ok(ConfigValue::Int(n.as_i64().unwrap_or_default())),
        // JSON has one number type: 300.0 is the integer 300 (as JSON Schema's `integer` says).
        Value::Number(n)
            if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0) =>
        {
            Ok(ConfigValue::Int(n.as_f64().unwrap_or_default() as i64))
        }
        Value::String(s) => Ok(ConfigValue::Text(s.clone())),
        _ => Err(FieldError::new(
            format!("/config/{key}"),
            "scalar",
            "configuration values are booleans, integers or strings",
        )),
    }
}

/// The JSON form of a configuration.
pub fn config_json(config: &BTreeMap<String, ConfigValue>) -> BTreeMap<String, Value> {
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    /// CPU in millicores
    pub cpu_millis: u32,
    /// memory in MiB
    pub memory_mib: u32,
    /// replicas
    pub replicas: u32,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// provisioned
    Active,
    /// deprovisioning began
    Deprovisioning,
}

/// An instance: everything that was set (so `terraform import` can rebuild it) plus computed fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// configuration, as asked for: parameters held for the maintenance window are listed in
    /// `pending_maintenance` and run once it is applied (`observed.config` is what runs)
    #[schema(value_type = BTreeMap<String, Object>)]
    pub config: BTreeMap<String, Value>,
    /// description
    pub description: String,
    /// whether DELETE is refused
    pub deletion_protection: bool,
    /// cluster the instance is placed on
    pub cluster: String,
    /// network ACL, sorted by CIDR
    pub acl: Vec<AclEntry>,
    /// the weekly maintenance window
    pub maintenance_window: MaintenanceWindow,
    /// what is held for the maintenance window and when it will be applied; absent when nothing is
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_maintenance: Option<PendingMaintenance>,
    /// the backup the instance was last restored from (at provisioning, in place, or by a move)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// a move to another cluster in progress (it serves on `cluster` until the move completes)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
    /// where clients connect, once the cluster published an address (only while the ACL is not empty)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// lifecycle state
    pub lifecycle: Lifecycle,
    /// version of the instance's desired state; also its ETag
    pub instance_version: u64,
    /// desired state compared with what the cluster's agent observed
    pub status: InstanceStatus,
    /// what the cluster's agent last reported, once it has
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// the last drift the cluster's agent healed, if any
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<Drift>,
    /// when it was provisioned
    pub created_at: DateTime<Utc>,
    /// when it last changed
    pub updated_at: DateTime<Utc>,
}

/// A move of an instance to another cluster of its region.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Migration {
    /// the move's id
    pub id: Uuid,
    /// where it serves until the move completes
    pub from: String,
    /// where it moves
    pub to: String,
    /// the backup the copy on `to` is restored from
    pub backup_id: Uuid,
    /// `backing_up` until the copy is placed, then `restoring` until it serves
    pub phase: String,
}

/// A page of instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    /// instances in creation order
    pub items: Vec<Instance>,
    /// pass as `page_token` to get the next page; absent on the last page
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday
    Monday,
    /// Tuesday
    Tuesday,
    /// Wednesday
    Wednesday,
    /// Thursday
    Thursday,
    /// Friday
    Friday,
    /// Saturday
    Saturday,
    /// Sunday
    Sunday,
}

impl From<Weekday> for domain::instance::maintenance::Weekday {
    fn from(day: Weekday) -> Self {
        match day {
            Weekday::Monday => Self::Monday,
            Weekday::Tuesday => Self::Tuesday,
            Weekday::Wednesday => Self::Wednesday,
            Weekday::Thursday => Self::Thursday,
            Weekday::Friday => Self::Friday,
            Weekday::Saturday => Self::Saturday,
            Weekday::Sunday => Self::Sunday,
        }
    }
}

impl From<domain::instance::maintenance::Weekday> for Weekday {
    fn from(day: domain::instance::maintenance::Weekday) -> Self {
        use domain::instance::maintenance::Weekday as D;
        match day {
            D::Monday => Self::Monday,
            D::Tuesday => Self::Tuesday,
            D::Wednesday => Self::Wednesday,
            D::Thursday => Self::Thursday,
            D::Friday => Self::Friday,
            D::Saturday => Self::Saturday,
            D::Sunday => Self::Sunday,
        }
    }
}

/// A weekly maintenance window: restart-mode configuration changes asked outside it are held until it
/// opens (or until `POST …/maintenance/apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// the day it opens
    pub day: Weekday,
    /// when it opens, `HH:MM` on a 24-hour clock, local time in `time_zone`
    #[schema(example = "02:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    /// how long it stays open, in minutes
    #[schema(minimum = 30, maximum = 1440)]
    pub duration_minutes: u32,
    /// IANA time zone, e.g. `Europe/Berlin`; UTC when absent
    #[serde(default = "utc")]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

impl From<MaintenanceWindow> for domain::instance::maintenance::MaintenanceWindow {
    fn from(w: MaintenanceWindow) -> Self {
        Self {
            day: w.day.into(),
            start: w.start,
            duration_minutes: w.duration_minutes,
            time_zone: w.time_zone,
        }
    }
}

impl From<&domain::instance::maintenance::MaintenanceWindow> for MaintenanceWindow {
    fn from(w: &domain::instance::maintenance::MaintenanceWindow) -> Self {
        Self {
            day: w.day.into(),
            start: w.start.clone(),
            duration_minutes: w.duration_minutes,
            time_zone: w.time_zone.clone(),
        }
    }
}

/// What is held for the maintenance window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PendingMaintenance {
    /// each change held
    pub items: Vec<MaintenanceItem>,
    /// when the window next opens (or opened, while it is open); the control plane applies the items
    /// then
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// One change held for the maintenance window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MaintenanceItem {
    /// configuration parameters whose change needs a restart of the service
    ConfigurationRestart {
        /// the parameters, sorted
        parameters: Vec<String>,
        /// the values they will take (an absent parameter goes back to the service's default)
        #[schema(value_type = BTreeMap<String, Object>)]
        config: BTreeMap<String, Value>,
    },
    /// a version upgrade the platform rolls out (`/v1/admin/rollouts`)
    VersionUpgrade {
        /// the version the instance runs until then
        from: String,
        /// the version it runs afterwards
        to: String,
        /// the rollout asking for it
        rollout: uuid::Uuid,
    },
}

impl PendingMaintenance {
    /// What `spec` holds, to be applied when its window next opens after `now`; `None` when nothing is
    /// held.
    pub fn of(spec: &domain::instance::InstanceSpec, now: DateTime<Utc>) -> Option<Self> {
        let pending = &spec.pending_maintenance;
        let mut items = Vec::new();
        if let Some(version) = &pending.version {
            items.push(MaintenanceItem::VersionUpgrade {
                from: version.from.clone(),
                to: version.to.clone(),
                rollout: version.rollout,
            });
        }
        if let Some(configuration) = &pending.configuration {
            let config = configuration
                .parameters
                .iter()
                .filter_map(|p| Some((p.clone(), configuration.config.get(p)?.clone())))
                .collect();
            items.push(MaintenanceItem::ConfigurationRestart {
                parameters: configuration.parameters.clone(),
                config: config_json(&config),
            });
        }
        if items.is_empty() {
            return None;
        }
        Some(Self { items, scheduled_for: spec.maintenance_window.next_opening(now) })
    }
}

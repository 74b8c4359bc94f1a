//! The service catalog as clients read it: services, versions with where each may be upgraded to, plans,
//! and each configuration parameter with its type, range or allowed values, and how a change applies.

use domain::catalog::{ApplyMode, ConfigKind, ServiceOffering, UpgradePath};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Resources, Service};

/// Every offered service.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Catalog {
    /// services, in catalog order
    pub services: Vec<ServiceCatalog>,
}

/// What one service offers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceCatalog {
    /// the service
    pub service: Service,
    /// how upgrades may move: `any_newer` or `one_major_at_a_time`
    pub upgrade_path: String,
    /// offered versions, oldest first
    pub versions: Vec<CatalogVersion>,
    /// offered plans
    pub plans: Vec<CatalogPlan>,
    /// configuration parameters an instance may set
    pub parameters: Vec<CatalogParameter>,
    /// the roles a user of an instance of this service may have (`POST …/instances/{id}/users`, and an
    /// Open Service Broker bind's `parameters.role`, whose default is the first)
    #[serde(default)]
    pub user_roles: Vec<String>,
}

/// An offered version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogVersion {
    /// the version
    pub version: String,
    /// versions an instance running this one may be upgraded to
    pub upgrades_to: Vec<String>,
    /// the configuration parameters an instance running this version may set
    pub parameters: Vec<String>,
}

/// An offered plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogPlan {
    /// plan name
    pub name: String,
    /// resources per replica, and replicas
    pub resources: Resources,
    /// storage an instance on this plan starts with, and the least it may have, in GiB
    pub storage_gib: u32,
}

/// The type of a configuration parameter's value.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    /// an integer within `minimum` and `maximum`
    Integer,
    /// `true` or `false`
    Boolean,
    /// one of `values`
    Enum,
}

/// How a change of a parameter applies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// without restarting the service
    Dynamic,
    /// by a rolling restart of the service's pods
    Restart,
    /// only at provision
    Immutable,
}

/// A configuration parameter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogParameter {
    /// parameter name, the key in an instance's `config`
    pub name: String,
    /// value type
    #[serde(rename = "type")]
    pub value_type: ParameterType,
    /// smallest allowed value (integers)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    /// largest allowed value (integers)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    /// allowed values (enums)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// how a change applies
    pub apply: Apply,
    /// what it sets
    pub description: String,
    /// what the service runs with while the parameter is not set, when known
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default: Option<serde_json::Value>,
    /// the first version that has it; absent: every version
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl From<&ServiceOffering> for ServiceCatalog {
    fn from(offering: &ServiceOffering) -> Self {
        let versions = offering
            .versions
            .iter()
            .map(|v| CatalogVersion {
                version: v.clone(),
                upgrades_to: domain::instance::upgrade_targets(offering, v)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                parameters: offering
                    .config_keys
                    .iter()
                    .filter(|key| key.available_in(v))
                    .map(|key| key.name.clone())
                    .collect(),
            })
            .collect();
        let plans = offering
            .plans
            .iter()
            .map(|p| CatalogPlan {
                name: p.name.clone(),
                resources: Resources {
                    cpu_millis: p.resources.cpu_millis,
                    memory_mib: p.resources.memory_mib,
                    replicas: p.resources.replicas,
                },
                storage_gib: p.storage_gib,
            })
            .collect();
        let parameters = offering
            .config_keys
            .iter()
            .map(|key| {
                let (value_type, minimum, maximum, values) = match &key.kind {
                    ConfigKind::Integer { min, max } => {
                        (ParameterType::Integer, Some(*min), Some(*max), None)
                    }
                    ConfigKind::Boolean => (ParameterType::Boolean, None, None, None),
                    ConfigKind::OneOf { values } => (ParameterType::Enum, None, None, Some(values.clone())),
                };
                CatalogParameter {
                    name: key.name.clone(),
                    value_type,
                    minimum,
                    maximum,
                    values,
                    apply: match key.apply {
                        ApplyMode::Dynamic => Apply::Dynamic,
                        ApplyMode::Restart => Apply::Restart,
                        ApplyMode::Immutable => Apply::Immutable,
                    },
                    description: key.description.clone(),
                    since: key.since.clone(),
                    default: key.default.as_ref().map(|v| match v {
                        domain::ConfigValue::Bool(b) => serde_json::Value::Bool(*b),
                        domain::ConfigValue::Int(i) => serde_json::Value::from(*i),
                        domain::ConfigValue::Text(t) => serde_json::Value::String(t.clone()),
                    }),
                }
            })
            .collect();
        Self {
            service: offering.service.into(),
            upgrade_path: match offering.upgrade_path {
                UpgradePath::AnyNewer => "any_newer",
                UpgradePath::OneMajorAtATime => "one_major_at_a_time",
            }
            .to_owned(),
            versions,
            plans,
            parameters,
            user_roles: domain::instance::users::user_roles(offering.service)
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
        }
    }
}

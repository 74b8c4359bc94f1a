//! The service catalog: which services are offered, in which versions, on which plans, with which
//! configuration parameters. It is data: a versioned file (`format` 1) an operator may replace to offer
//! other versions, plans or parameters without recompiling, checked whole when it is loaded
//! (`catalog/validate.rs`); the built-in one (`catalog/builtin.json`) is the default. The services
//! themselves are code (the agent renders each), so a catalog may offer fewer services, never others.
//!
//! Apply modes of the built-in catalog. PostgreSQL parameters go to CloudNativePG's
//! `postgresql.parameters`: "the cluster instances will immediately reload the configuration to apply the
//! changes. If the change involves a parameter requiring a restart, the operator will perform a rolling
//! upgrade" (CloudNativePG v1.30.0, docs/src/postgresql_conf.md, *Changing configuration*); which
//! parameters need a restart is PostgreSQL's `postmaster` context (PostgreSQL docs, *Server
//! Configuration*: max_connections and wal_level are postmaster; work_mem is user;
//! log_min_duration_statement and track_io_timing are superuser). Defaults are what the service runs
//! with when a parameter is unset, under CloudNativePG for PostgreSQL (`wal_level` is `logical` there:
//! v1.30.0 `pkg/postgres/configuration.go`, `CnpgConfigurationSettings`). The other services read their
//! configuration file at start, and the agent rolls their pods when it changes (the pod template carries
//! the configuration's hash), so every change of theirs is a restart.

mod validate;

use std::{cmp::Ordering, collections::BTreeMap, fmt, str::FromStr, sync::LazyLock};

use serde::{Deserialize, Serialize};

pub use validate::CatalogError;

/// A managed service offered by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// PostgreSQL
    Postgresql,
    /// MongoDB
    Mongodb,
    /// InfluxDB
    Influxdb,
    /// Grafana
    Grafana,
}

impl ServiceType {
    /// All offered services, in catalog order.
    pub const ALL: [Self; 4] = [Self::Postgresql, Self::Mongodb, Self::Influxdb, Self::Grafana];

    /// The wire name (`postgresql`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgresql => "postgresql",
            Self::Mongodb => "mongodb",
            Self::Influxdb => "influxdb",
            Self::Grafana => "grafana",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or(())
    }
}

/// A service version as `major` or `major.minor`; ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// major version
    pub major: u32,
    /// minor version, 0 when absent
    pub minor: u32,
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor).cmp(&(other.major, other.minor))
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Version {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        let num = |p: &str| {
            (!p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        Ok(Self { major: num(major).ok_or(())?, minor: num(minor).ok_or(())? })
    }
}

/// How a service may move between versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradePath {
    /// any newer offered version (PostgreSQL's `pg_upgrade`, Grafana, InfluxDB 2.x)
    AnyNewer,
    /// one major version at a time (MongoDB's feature compatibility version forbids skipping)
    OneMajorAtATime,
}

/// Compute resources of a plan, per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores
    pub cpu_millis: u32,
    /// memory in MiB
    pub memory_mib: u32,
    /// replicas
    pub replicas: u32,
}

/// A plan: resources plus the storage an instance on it starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// plan name, unique per service (a DNS-1123 label)
    pub name: String,
    /// resources per replica
    #[serde(flatten)]
    pub resources: Resources,
    /// storage an instance gets when none is asked for, in GiB; also the minimum
    pub storage_gib: u32,
}

/// The kind of value a configuration parameter takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConfigKind {
    /// integer within an inclusive range
    Integer {
        /// smallest allowed value
        min: i64,
        /// largest allowed value
        max: i64,
    },
    /// `true` or `false`
    Boolean,
    /// one of a fixed set of strings
    OneOf {
        /// the allowed values
        values: Vec<String>,
    },
}

/// How a change of a configuration parameter reaches the running service, as the control plane applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMode {
    /// applied to the running service without restarting it
    Dynamic,
    /// applied by a rolling restart of the service's pods
    Restart,
    /// set at provision only; refused afterwards
    Immutable,
}

/// A configuration parameter a service accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    /// parameter name (`a-z`, `0-9`, `_`, starting with a letter)
    pub name: String,
    /// value kind
    pub kind: ConfigKind,
    /// how a change applies
    pub apply: ApplyMode,
    /// what it sets, for people
    pub description: String,
    /// the value the service runs with while the parameter is not set, when known
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ConfigValue>,
    /// the first offered version that has the parameter; absent: every version
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl ConfigKey {
    /// Whether an instance running `version` may set the parameter. A version that does not parse (no
    /// longer offered, say) has every parameter without a `since`.
    pub fn available_in(&self, version: &str) -> bool {
        match (&self.since, version.parse::<Version>()) {
            (None, _) => true,
            (Some(since), Ok(version)) => since.parse::<Version>().is_ok_and(|since| version >= since),
            (Some(_), Err(())) => false,
        }
    }
}

/// A configuration value. Only scalars: services are configured by flat key/value settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// boolean setting
    Bool(bool),
    /// integer setting
    Int(i64),
    /// string setting
    Text(String),
}

/// Configuration of an instance: key to value, sorted for deterministic output.
pub type Config = BTreeMap<String, ConfigValue>;

/// Everything the catalog says about one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOffering {
    /// the service
    pub service: ServiceType,
    /// offered versions, oldest first
    pub versions: Vec<String>,
    /// how upgrades may move
    pub upgrade_path: UpgradePath,
    /// offered plans
    pub plans: Vec<Plan>,
    /// accepted configuration parameters
    #[serde(rename = "parameters")]
    pub config_keys: Vec<ConfigKey>,
}

/// The catalog file's format this build reads.
pub const CATALOG_FORMAT: u32 = 1;

/// The catalog: every offered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// file format, [`CATALOG_FORMAT`]
    pub format: u32,
    /// the offered services, each once
    pub services: Vec<ServiceOffering>,
}

static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| {
    let catalog: Catalog =
        serde_json::from_str(include_str!("catalog/builtin.json")).expect("the built-in catalog parses");
    catalog.validated().expect("the built-in catalog is valid")
});

impl Catalog {
    /// The catalog this build ships (`catalog/builtin.json`; a test keeps it valid).
    pub fn builtin() -> &'static Catalog {
        &BUILTIN
    }

    /// The offering of a service, if the catalog offers it.
    pub fn offering(&self, service: ServiceType) -> Option<&ServiceOffering> {
        self.services.iter().find(|o| o.service == service)
    }

    /// All offerings, in the catalog's order.
    pub fn offerings(&self) -> &[ServiceOffering] {
        &self.services
    }
}

impl ServiceOffering {
    /// The plan called `name`, if offered.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Whether `version` is offered.
    pub fn offers_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// The configuration parameter called `name`, if accepted.
    pub fn config_key(&self, name: &str) -> Option<&ConfigKey> {
        self.config_keys.iter().find(|k| k.name == name)
    }
}

impl ConfigKind {
    /// Checks `value`; on failure returns the rule it broke, for the error message.
    pub fn check(&self, value: &ConfigValue) -> Result<(), String> {
        match (self, value) {
            (Self::Integer { min, max }, ConfigValue::Int(v)) if (min..=max).contains(&v) => Ok(()),
            (Self::Integer { min, max }, _) => Err(format!("must be an integer from {min} to {max}")),
            (Self::Boolean, ConfigValue::Bool(_)) => Ok(()),
            (Self::Boolean, _) => Err("must be a boolean".to_owned()),
            (Self::OneOf { values }, ConfigValue::Text(v)) if values.contains(v) => Ok(()),
            (Self::OneOf { values }, _) => Err(format!("must be one of {}", values.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_offers_every_service_and_its_versions_parse() {
        for service in ServiceType::ALL {
            let offering = Catalog::builtin().offering(service).expect("offered");
            assert_eq!(offering.service, service);
            let parsed: Vec<Version> = offering.versions.iter().map(|v| v.parse().unwrap()).collect();
            assert!(parsed.windows(2).all(|w| w[0] < w[1]), "{:?}", offering.versions);
        }
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("10.4") > v("9.9"));
        assert!(v("16") > v("15.9"));
        assert!("1.x".parse::<Version>().is_err());
        assert!("".parse::<Version>().is_err());
    }
}

//! The service catalog: which services are offered, in which versions, on which plans, with which
//! configuration keys. It is code, not data, so that every rule that depends on it is checked by the
//! compiler and by the aggregate's tests.

use std::{cmp::Ordering, collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// plan name, unique per service
    pub name: &'static str,
    /// resources per replica
    pub resources: Resources,
    /// storage an instance gets when none is asked for, in GiB; also the minimum
    pub storage_gib: u32,
}

/// The kind of value a configuration key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    OneOf(&'static [&'static str]),
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

/// A configuration key a service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKey {
    /// key name
    pub name: &'static str,
    /// value kind
    pub kind: ConfigKind,
    /// how a change applies
    pub apply: ApplyMode,
    /// what it sets, for people
    pub description: &'static str,
}

const fn key(name: &'static str, kind: ConfigKind, apply: ApplyMode, description: &'static str) -> ConfigKey {
    ConfigKey { name, kind, apply, description }
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
#[derive(Debug)]
pub struct ServiceOffering {
    /// the service
    pub service: ServiceType,
    /// offered versions, oldest first
    pub versions: &'static [&'static str],
    /// how upgrades may move
    pub upgrade_path: UpgradePath,
    /// offered plans
    pub plans: &'static [Plan],
    /// accepted configuration keys
    pub config_keys: &'static [ConfigKey],
}

const fn plan(name: &'static str, cpu_millis: u32, memory_mib: u32, replicas: u32, storage_gib: u32) -> Plan {
    Plan { name, resources: Resources { cpu_millis, memory_mib, replicas }, storage_gib }
}

const DATABASE_PLANS: &[Plan] = &[
    plan("starter", 500, 1024, 1, 10),
    plan("standard", 2000, 8192, 1, 50),
    plan("ha", 2000, 8192, 3, 100),
    plan("ha-large", 8000, 32768, 3, 500),
];
const GRAFANA_PLANS: &[Plan] = &[plan("starter", 250, 512, 1, 1), plan("ha", 1000, 2048, 2, 5)];
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];

// Apply modes. PostgreSQL parameters go to CloudNativePG's `postgresql.parameters`: "the cluster instances
// will immediately reload the configuration to apply the changes. If the change involves a parameter
// requiring a restart, the operator will perform a rolling upgrade" (CloudNativePG v1.30.0,
// docs/src/postgresql_conf.md, *Changing configuration*); which parameters need a restart is PostgreSQL's
// `postmaster` context (PostgreSQL docs, *Server Configuration*: max_connections and wal_level are
// postmaster; work_mem is user; log_min_duration_statement and track_io_timing are superuser). The other
// services read their configuration file at start, and the agent rolls their pods when it changes (the
// pod template carries the configuration's hash), so every change of theirs is a restart.
const OFFERINGS: [ServiceOffering; 4] = [
    ServiceOffering {
        service: ServiceType::Postgresql,
        versions: &["14", "15", "16", "17"],
        upgrade_path: UpgradePath::AnyNewer,
        plans: DATABASE_PLANS,
        config_keys: &[
            key(
                "max_connections",
                ConfigKind::Integer { min: 10, max: 5000 },
                ApplyMode::Restart,
                "maximum concurrent connections",
            ),
            key(
                "work_mem_kib",
                ConfigKind::Integer { min: 64, max: 2_097_152 },
                ApplyMode::Dynamic,
                "memory per sort or hash operation before spilling to disk, in KiB",
            ),
            key(
                "log_min_duration_statement_ms",
                ConfigKind::Integer { min: -1, max: 3_600_000 },
                ApplyMode::Dynamic,
                "log statements running at least this long, in ms (-1: off)",
            ),
            key("track_io_timing", ConfigKind::Boolean, ApplyMode::Dynamic, "collect timing of I/O calls"),
            key(
                "data_checksums",
                ConfigKind::Boolean,
                ApplyMode::Immutable,
                "checksums on data pages, chosen when the database is created (initdb -k)",
            ),
            key(
                "wal_level",
                ConfigKind::OneOf(&["replica", "logical"]),
                ApplyMode::Restart,
                "how much information is written to the WAL",
            ),
        ],
    },
    ServiceOffering {
        service: ServiceType::Mongodb,
        versions: &["6.0", "7.0", "8.0"],
        upgrade_path: UpgradePath::OneMajorAtATime,
        plans: DATABASE_PLANS,
        config_keys: &[
            key(
                "max_incoming_connections",
                ConfigKind::Integer { min: 10, max: 65536 },
                ApplyMode::Restart,
                "maximum simultaneous connections",
            ),
            key(
                "slow_op_threshold_ms",
                ConfigKind::Integer { min: 0, max: 3_600_000 },
                ApplyMode::Restart,
                "operations slower than this are logged as slow, in ms",
            ),
            key(
                "profiling_level",
                ConfigKind::OneOf(&["off", "slow_op", "all"]),
                ApplyMode::Restart,
                "which operations the database profiler records",
            ),
        ],
    },
    ServiceOffering {
        service: ServiceType::Influxdb,
        versions: &["2.6", "2.7"],
        upgrade_path: UpgradePath::AnyNewer,
        plans: DATABASE_PLANS,
        config_keys: &[
            key(
                "query_concurrency",
                ConfigKind::Integer { min: 0, max: 1024 },
                ApplyMode::Restart,
                "queries allowed to run at once (0: unlimited)",
            ),
            key("log_level", ConfigKind::OneOf(LOG_LEVELS), ApplyMode::Restart, "log verbosity"),
            key(
                "reporting_disabled",
                ConfigKind::Boolean,
                ApplyMode::Restart,
                "stop sending usage statistics",
            ),
        ],
    },
    ServiceOffering {
        service: ServiceType::Grafana,
        versions: &["10.4", "11.6", "12.2"],
        upgrade_path: UpgradePath::AnyNewer,
        plans: GRAFANA_PLANS,
        config_keys: &[
            key("log_level", ConfigKind::OneOf(LOG_LEVELS), ApplyMode::Restart, "log verbosity"),
            key("allow_sign_up", ConfigKind::Boolean, ApplyMode::Restart, "let visitors create accounts"),
            key(
                "anonymous_enabled",
                ConfigKind::Boolean,
                ApplyMode::Restart,
                "allow access without signing in",
            ),
        ],
    },
];

/// Read access to the catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalog;

impl Catalog {
    /// The offering of a service.
    pub fn offering(service: ServiceType) -> &'static ServiceOffering {
        // OFFERINGS is in ServiceType::ALL order; the test below keeps it so.
        &OFFERINGS[service as usize]
    }

    /// All offerings.
    pub fn offerings() -> &'static [ServiceOffering] {
        &OFFERINGS
    }
}

impl ServiceOffering {
    /// The plan called `name`, if offered.
    pub fn plan(&self, name: &str) -> Option<&'static Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Whether `version` is offered.
    pub fn offers_version(&self, version: &str) -> bool {
        self.versions.contains(&version)
    }

    /// The configuration key called `name`, if accepted.
    pub fn config_key(&self, name: &str) -> Option<&'static ConfigKey> {
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
            (Self::OneOf(allowed), ConfigValue::Text(v)) if allowed.contains(&v.as_str()) => Ok(()),
            (Self::OneOf(allowed), _) => Err(format!("must be one of {}", allowed.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offerings_are_indexed_by_service_type() {
        for service in ServiceType::ALL {
            assert_eq!(Catalog::offering(service).service, service);
        }
    }

    #[test]
    fn versions_are_listed_oldest_first_and_parse() {
        for offering in Catalog::offerings() {
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

//! Checking a catalog as a whole when it is loaded, so that a bad file stops the process at start with
//! every problem named, instead of failing requests later.

use std::collections::HashSet;

use super::{CATALOG_FORMAT, Catalog, ConfigKind, ServiceType, Version};
use crate::instance::{MAX_STORAGE_GIB, check_dns_label};

/// Most replicas a plan may ask for.
const MAX_REPLICAS: u32 = 9;

/// Why a catalog was refused: every problem, each at its path in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the catalog has {} problem(s): {}", .problems.len(), .problems.join("; "))]
pub struct CatalogError {
    /// `path: what is wrong`, e.g. `services[0].versions[2]: "16.x" is not a version`
    pub problems: Vec<String>,
}

/// Why a multi-replica InfluxDB plan is refused.
const INFLUXDB_REPLICAS: &str = "InfluxDB OSS 2 has no clustering: more than one replica would be \
     unrelated servers, each with part of the writes (InfluxDB docs: clustering is InfluxDB Enterprise's); \
     at most 1";

/// Why a multi-replica Grafana plan is refused.
const GRAFANA_REPLICAS: &str = "more than one Grafana replica needs a shared database (Grafana docs, *Set up \
     Grafana for high availability*: MySQL or PostgreSQL in place of the embedded SQLite), which the agent \
     does not provision yet: with each replica's own SQLite file, users and dashboards differ by replica; \
     at most 1";

/// Why a plan of `service` may not have more than one replica, if it may not.
fn single_replica_only(service: ServiceType) -> Option<&'static str> {
    match service {
        ServiceType::Influxdb => Some(INFLUXDB_REPLICAS),
        // A replica set the agent builds (ARCHITECTURE.md, *HA plans*).
        ServiceType::Mongodb => None,
        ServiceType::Grafana => Some(GRAFANA_REPLICAS),
        ServiceType::Postgresql => None,
    }
}

/// PostgreSQL parameters CloudNativePG manages itself or forbids (cloudnative-pg v1.30.0
/// pkg/postgres/configuration.go, `FixedConfigurationParameters`: "fixed" ones the operator sets, "blocked"
/// ones that must keep their default for it to work). Its webhook refuses a Cluster setting any of them
/// ("Can't set fixed configuration parameter", internal/webhook/v1/cluster_webhook.go), so an instance
/// offered one could never be applied. Catalog names cannot hold a dot, so the `pg_failover_slots.*`
/// entries are left out.
const CLOUDNATIVEPG_FIXED: &[&str] = &[
    "allow_system_table_mods",
    "archive_mode",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "config_file",
    "data_directory",
    "data_sync_retry",
    "event_source",
    "external_pid_file",
    "hba_file",
    "hot_standby",
    "ident_file",
    "jit_provider",
    "listen_addresses",
    "logging_collector",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "archive_cleanup_command",
    "archive_command",
    "log_destination",
    "log_directory",
    "log_file_mode",
    "log_filename",
    "log_rotation_age",
    "log_rotation_size",
    "log_truncate_on_rotation",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "restart_after_crash",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_crl_file",
    "ssl_dh_params_file",
    "ssl_ecdh_curve",
    "ssl_key_file",
    "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload",
    "ssl_prefer_server_ciphers",
    "stats_temp_directory",
    "synchronous_standby_names",
    "synchronized_standby_slots",
    "syslog_facility",
    "syslog_ident",
    "syslog_sequence_numbers",
    "syslog_split_messages",
];

/// Why CloudNativePG would refuse a PostgreSQL parameter of this name, if it would.
fn cloudnativepg_refuses(name: &str) -> Option<String> {
    CLOUDNATIVEPG_FIXED.contains(&name).then(|| {
        format!(
            "{name} is managed by CloudNativePG, which refuses a Cluster setting it (\"Can't set fixed \
             configuration parameter\", cloudnative-pg v1.30.0 pkg/postgres/configuration.go)"
        )
    })
}

impl Catalog {
    /// The catalog if it holds together, else every problem found.
    pub fn validated(self) -> Result<Self, CatalogError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, what: String| problems.push(format!("{path}: {what}"));
        if self.format != CATALOG_FORMAT {
            problem("format".into(), format!("is {}, this build reads {CATALOG_FORMAT}", self.format));
        }
        if self.services.is_empty() {
            problem("services".into(), "offers no service".into());
        }
        let mut services = HashSet::new();
        for (i, offering) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if !services.insert(offering.service) {
                problem(format!("{at}.service"), format!("{} is offered twice", offering.service));
            }
            if offering.versions.is_empty() {
                problem(format!("{at}.versions"), "offers no version".into());
            }
            let mut previous: Option<Version> = None;
            for (j, text) in offering.versions.iter().enumerate() {
                match text.parse::<Version>() {
                    Err(()) => problem(
                        format!("{at}.versions[{j}]"),
                        format!("{text:?} is not major or major.minor"),
                    ),
                    Ok(version) if previous.is_some_and(|p| p >= version) => problem(
                        format!("{at}.versions[{j}]"),
                        format!("{text} is not newer than the one before"),
                    ),
                    Ok(version) => previous = Some(version),
                }
            }
            if offering.plans.is_empty() {
                problem(format!("{at}.plans"), "offers no plan".into());
            }
            let mut plans = HashSet::new();
            for (j, plan) in offering.plans.iter().enumerate() {
                let at = format!("{at}.plans[{j}]");
                if check_dns_label("plan", &plan.name).is_err() {
                    problem(format!("{at}.name"), format!("{:?} is not a DNS-1123 label", plan.name));
                }
                if !plans.insert(plan.name.as_str()) {
                    problem(format!("{at}.name"), format!("{} is offered twice", plan.name));
                }
                let r = plan.resources;
                if r.cpu_millis == 0 || r.memory_mib == 0 {
                    problem(at.clone(), "needs CPU and memory".into());
                }
                if !(1..=MAX_REPLICAS).contains(&r.replicas) {
                    problem(format!("{at}.replicas"), format!("must be from 1 to {MAX_REPLICAS}"));
                } else if let Some(why) = single_replica_only(offering.service)
                    && r.replicas > 1
                {
                    problem(format!("{at}.replicas"), why.into());
                }
                if !(1..=MAX_STORAGE_GIB).contains(&plan.storage_gib) {
                    problem(format!("{at}.storage_gib"), format!("must be from 1 to {MAX_STORAGE_GIB}"));
                }
            }
            let mut names = HashSet::new();
            for (j, key) in offering.config_keys.iter().enumerate() {
                let at = format!("{at}.parameters[{j}]");
                let well_formed = key.name.starts_with(|c: char| c.is_ascii_lowercase())
                    && key.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !well_formed {
                    problem(
                        format!("{at}.name"),
                        format!("{:?} is not a-z, 0-9 and _ starting with a letter", key.name),
                    );
                }
                if offering.service == ServiceType::Postgresql
                    && let Some(why) = cloudnativepg_refuses(&key.name)
                {
                    problem(format!("{at}.name"), why);
                }
                if !names.insert(key.name.as_str()) {
                    problem(format!("{at}.name"), format!("{} is listed twice", key.name));
                }
                match &key.kind {
                    ConfigKind::Integer { min, max } if min > max => {
                        problem(format!("{at}.kind"), format!("min {min} is above max {max}"))
                    }
                    ConfigKind::OneOf { values } if values.is_empty() => {
                        problem(format!("{at}.kind.values"), "allows no value".into())
                    }
                    _ => {}
                }
                if let Some(since) = &key.since
                    && !offering.offers_version(since)
                {
                    problem(format!("{at}.since"), format!("{since} is not an offered version"));
                }
                if let Some(default) = &key.default
                    && let Err(rule) = key.kind.check(default)
                {
                    problem(format!("{at}.default"), rule);
                }
            }
        }
        if problems.is_empty() { Ok(self) } else { Err(CatalogError { problems }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_catalog_is_refused_with_every_problem_at_its_path() {
        let mut catalog = Catalog::builtin().clone();
        catalog.format = 2;
        catalog.services[0].versions.push("15".into());
        catalog.services[0].plans[1].name = "starter".into();
        catalog.services[1].config_keys[0].kind = ConfigKind::Integer { min: 5, max: 1 };
        catalog.services[1].config_keys[1].default = Some(crate::ConfigValue::Text("x".into()));
        let error = catalog.validated().expect_err("refused");
        assert_eq!(
            error.problems,
            [
                "format: is 2, this build reads 1",
                "services[0].versions[5]: 15 is not newer than the one before",
                "services[0].plans[1].name: starter is offered twice",
                "services[1].parameters[0].kind: min 5 is above max 1",
                "services[1].parameters[1].default: must be an integer from 0 to 3600000",
            ]
        );
    }

    /// CloudNativePG v1.30.0 refuses a Cluster that sets one of its fixed parameters
    /// (pkg/postgres/configuration.go `FixedConfigurationParameters`, webhook "Can't set fixed
    /// configuration parameter"): a catalog offering one is refused at start, naming the parameter.
    #[test]
    fn a_catalog_offering_a_postgresql_parameter_cloudnativepg_forbids_is_refused() {
        let mut catalog = Catalog::builtin().clone();
        let mut key = catalog.services[0].config_keys[0].clone();
        key.name = "archive_mode".into();
        catalog.services[0].config_keys.push(key);
        let at = catalog.services[0].config_keys.len() - 1;
        let error = catalog.validated().expect_err("refused");
        assert_eq!(error.problems.len(), 1, "{error}");
        assert!(
            error.problems[0].starts_with(&format!(
                "services[0].parameters[{at}].name: archive_mode is managed by CloudNativePG"
            )),
            "{error}"
        );
        // Another service may use the name.
        let mut catalog = Catalog::builtin().clone();
        let mut key = catalog.services[1].config_keys[0].clone();
        key.name = "port".into();
        catalog.services[1].config_keys.push(key);
        assert!(catalog.validated().is_ok());
    }

    /// InfluxDB OSS 2 has no clustering, and Grafana replicas without a shared database are unrelated
    /// servers that lose writes silently. The built-in catalog offers neither with more than one replica,
    /// and an operator's catalog asking for one is refused at start with the reason. PostgreSQL's replicas
    /// are CloudNativePG's streaming replicas, MongoDB's the members of a replica set the agent builds.
    #[test]
    fn no_influxdb_or_grafana_plan_has_more_than_one_replica() {
        for (service, why) in
            [(ServiceType::Influxdb, INFLUXDB_REPLICAS), (ServiceType::Grafana, GRAFANA_REPLICAS)]
        {
            let offering = Catalog::builtin().offering(service).unwrap();
            assert!(offering.plans.iter().all(|p| p.resources.replicas == 1), "{:?}", offering.plans);
            let mut catalog = Catalog::builtin().clone();
            let index = catalog.services.iter().position(|o| o.service == service).unwrap();
            let mut plan = catalog.services[index].plans[0].clone();
            plan.name = "ha".into();
            plan.resources.replicas = 3;
            catalog.services[index].plans.push(plan);
            let at = catalog.services[index].plans.len() - 1;
            let error = catalog.validated().expect_err("refused");
            assert_eq!(error.problems, [format!("services[{index}].plans[{at}].replicas: {why}")]);
        }
        let postgres = Catalog::builtin().offering(ServiceType::Postgresql).unwrap();
        assert!(postgres.plans.iter().any(|p| p.resources.replicas > 1), "PostgreSQL keeps its HA plans");
    }

    /// MongoDB's `ha` plan is a replica set of three members (ARCHITECTURE.md, *HA plans*), and an
    /// operator's catalog may offer other member counts.
    #[test]
    fn mongodb_offers_a_three_member_replica_set() {
        let mongo = Catalog::builtin().offering(ServiceType::Mongodb).unwrap();
        let ha = mongo.plans.iter().find(|p| p.name == "ha").expect("an ha plan");
        assert_eq!(ha.resources.replicas, 3);
        let mut catalog = Catalog::builtin().clone();
        let index = catalog.services.iter().position(|o| o.service == ServiceType::Mongodb).unwrap();
        let mut plan = catalog.services[index].plans[0].clone();
        plan.name = "ha-five".into();
        plan.resources.replicas = 5;
        catalog.services[index].plans.push(plan);
        assert!(catalog.validated().is_ok());
    }

    #[test]
    fn the_builtin_catalog_round_trips_through_its_file_format() {
        let text = serde_json::to_string(Catalog::builtin()).unwrap();
        let read: Catalog = serde_json::from_str(&text).unwrap();
        assert_eq!(&read.validated().unwrap(), Catalog::builtin());
    }
}

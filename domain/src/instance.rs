//! The Instance aggregate: one managed-service instance, from provision to deprovision.

mod aggregate;
mod aspects;
mod commands;
mod errors;
mod events;
pub mod maintenance;
pub mod migration;
mod network;
pub mod restore;
mod rules;
pub mod schedules;
#[cfg(test)]
mod tests;
mod upcasters;
pub mod users;

use std::sync::Arc;

use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::rules::{MAX_PROJECT_LEN, RESERVED_PROJECTS, check_dns_label, check_project, upgrade_targets};
use self::rules::{
    check_config, check_description, check_storage, check_upgrade, check_version, invalid, lookup_plan,
};
pub use self::{
    aspects::{APPLIED_ASPECTS, Aspect, Generations, PROVISIONED_ASPECTS, changed_aspects},
    commands::{InstanceCommand, ProvisionInstance, UpdateInstance},
    errors::{InstanceError, Violation},
    events::{InstanceEvent, InstanceProvisioned},
    network::{AclEntry, MAX_ACL_DESCRIPTION_CHARS, MAX_ACL_ENTRIES, check_acl, check_acl_entry},
    upcasters::upcasters,
};
use crate::{
    catalog::{ApplyMode, Catalog, Config, ConfigValue, Resources, ServiceType},
    names::{NameRegistry, NameReservationError},
};

/// Largest volume an instance may ask for, in GiB.
pub const MAX_STORAGE_GIB: u32 = 65_536;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// The desired state of a provisioned instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// instance id
    pub id: Uuid,
    /// owning project
    pub project: String,
    /// name, unique in the project
    pub name: String,
    /// service type
    pub service: ServiceType,
    /// service version
    pub version: String,
    /// plan name
    pub plan: String,
    /// resources per replica, from the plan
    pub resources: Resources,
    /// storage in GiB
    pub storage_gib: u32,
    /// configuration
    pub config: Config,
    /// description
    pub description: String,
    /// whether Deprovision is refused
    pub deletion_protection: bool,
    /// cluster the instance is placed on
    pub cluster: String,
    /// network ACL, sorted by CIDR (see [`AclEntry`])
    #[serde(default)]
    pub acl: Vec<AclEntry>,
    /// backup schedules, sorted by name
    #[serde(default)]
    pub backup_schedules: Vec<schedules::BackupSchedule>,
    /// the latest restore asked for, if any
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<restore::RestoreSpec>,
    /// the weekly maintenance window (the platform's default for instances that never named one)
    #[serde(default)]
    pub maintenance_window: maintenance::MaintenanceWindow,
    /// what is held for the maintenance window; not part of what the cluster applies
    #[serde(default, skip_serializing_if = "maintenance::PendingMaintenance::is_empty")]
    pub pending_maintenance: maintenance::PendingMaintenance,
    /// PostgreSQL: the Barman server name its WAL and base backups go under since its last upgrade to
    /// another major (`<name>-pg<major>`); `None`: the instance's name, as CloudNativePG's plugin defaults
    /// it. A major upgrade must archive under a new name: `pg_upgrade` makes a new system with timeline 1,
    /// whose WAL would overwrite the old major's (CloudNativePG v1.30.0 `docs/src/postgres_upgrades.md`,
    /// "Backup and WAL Archive Considerations"). Derived from `VersionUpgraded`, so no new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_server: Option<String>,
    /// the instance's users, sorted by name (see [`users`]); no passwords, which are the cluster's
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<users::User>,
    /// a move to another cluster in progress
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<migration::Migration>,
    /// the rollout whose upgrade gave the instance the version it runs, until another version change;
    /// derived from `MaintenanceApplied` (what it released), so no new event. A rollout's progress reads
    /// it once nothing is held any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out: Option<maintenance::PendingVersion>,
}

/// The Barman server name a PostgreSQL instance called `name` archives under after an upgrade from
/// `from` to `to`, when that crosses majors.
pub fn archive_server_after_upgrade(name: &str, from: &str, to: &str) -> Option<String> {
    let major = |v: &str| v.split('.').next().unwrap_or(v).to_owned();
    (major(from) != major(to)).then(|| format!("{name}-pg{}", major(to)))
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// not provisioned
    #[default]
    Absent,
    /// provisioned; accepts updates
    Active,
    /// deprovisioning began; accepts only Deprovision
    Deprovisioning,
}

/// The Instance aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    spec: Option<InstanceSpec>,
    lifecycle: Lifecycle,
    /// events applied: the aggregate's version
    #[serde(default)]
    generation: u64,
    /// the version that last changed each applied aspect
    #[serde(default)]
    generations: Generations,
    /// every cluster a move involved, sorted (empty until the first move begins): the instance's messages
    /// may be on the subjects of any of them (`migration.rs`)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    clusters_moved_between: Vec<String>,
}

/// What the aggregate needs from outside: the name registry and the catalog commands are checked
/// against.
#[derive(Clone)]
pub struct InstanceServices {
    /// reserves names across instances
    pub names: Arc<dyn NameRegistry>,
    /// what is offered
    pub catalog: Arc<Catalog>,
}

impl InstanceServices {
    /// Services with the built-in catalog.
    pub fn new(names: Arc<dyn NameRegistry>) -> Self {
        Self { names, catalog: Arc::new(Catalog::builtin().clone()) }
    }
}

impl std::fmt::Debug for InstanceServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceServices").finish_non_exhaustive()
    }
}

impl Instance {
    /// The desired state, once provisioned.
    pub fn spec(&self) -> Option<&InstanceSpec> {
        self.spec.as_ref()
    }

    /// Where the instance is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The version (generation) that last changed each applied aspect.
    pub fn generations(&self) -> Generations {
        self.generations
    }

    /// Takes an aggregate read from a snapshot written before generations were tracked, at `version`:
    /// which version changed which aspect is unknown, so each counts as changed at `version`.
    pub fn assume_generation(&mut self, version: u64) {
        self.generation = version;
        self.generations = Generations::all(version);
    }

    async fn provision(
        &self,
        cmd: ProvisionInstance,
        services: &InstanceServices,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        check_project(&cmd.project)?;
        check_dns_label("name", &cmd.name)?;
        let offering = offered(&services.catalog, cmd.service)?;
        check_version(offering, &cmd.version)?;
        let plan = lookup_plan(offering, &cmd.plan)?;
        let storage_gib = cmd.storage_gib.unwrap_or(plan.storage_gib);
        check_storage(storage_gib, plan)?;
        check_config(offering, &cmd.version, &cmd.config, None)?;
        check_description(&cmd.description)?;
        check_dns_label("cluster", &cmd.cluster)?;
        let acl = network::check_acl(&cmd.acl, "/acl", cmd.allow_public)?;
        let restore = match &cmd.restore {
            Some(source) => Some(restore::check(source, cmd.service, &cmd.version)?),
            None => None,
        };
        if let Some(window) = &cmd.maintenance_window {
            window.check("/maintenance_window")?;
        }
        let provisioned = InstanceProvisioned {
            instance_id: cmd.instance_id,
            project: cmd.project,
            name: cmd.name,
            service: cmd.service,
            version: cmd.version,
            plan: cmd.plan,
            resources: plan.resources,
            storage_gib,
            config: cmd.config,
            description: cmd.description,
            deletion_protection: cmd.deletion_protection,
            cluster: cmd.cluster,
        };
        if let Some(existing) = &self.spec {
            // A retried provision of the same instance changes nothing; anything else is a conflict.
            let mut same = spec_of(&provisioned);
            same.resources = existing.resources;
            same.acl = acl;
            same.restore = restore;
            same.maintenance_window = cmd.maintenance_window.unwrap_or_default();
            same.pending_maintenance = existing.pending_maintenance.clone();
            same.users = existing.users.clone();
            same.rolled_out = existing.rolled_out.clone();
            return if same == *existing { Ok(vec![]) } else { Err(InstanceError::AlreadyExists) };
        }
        services
            .names
            .reserve(&provisioned.project, &provisioned.name, provisioned.instance_id)
            .await
            .map_err(|e| match e {
                NameReservationError::Taken { holder } => {
                    InstanceError::NameTaken { name: provisioned.name.clone(), holder }
                }
                NameReservationError::Unavailable(why) => InstanceError::RegistryUnavailable(why),
            })?;
        let mut events = vec![InstanceEvent::InstanceProvisioned(provisioned)];
        if !acl.is_empty() {
            events.push(InstanceEvent::NetworkAccessChanged { entries: acl });
        }
        if let Some(restore) = restore {
            events.push(InstanceEvent::RestoreRequested { restore });
        }
        if let Some(window) = cmd.maintenance_window {
            events.push(InstanceEvent::MaintenanceWindowChanged { window });
        }
        Ok(events)
    }

    fn replace_acl(
        &self,
        entries: &[AclEntry],
        allow_public: bool,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        let entries = network::check_acl(entries, "/entries", allow_public)?;
        Ok(if entries == spec.acl { vec![] } else { vec![InstanceEvent::NetworkAccessChanged { entries }] })
    }

    fn add_acl_entry(
        &self,
        entry: AclEntry,
        allow_public: bool,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        network::check_new_entry(&spec.acl, &entry, "", allow_public)?;
        if spec.acl.contains(&entry) {
            return Ok(vec![]);
        }
        let mut entries: Vec<AclEntry> = spec.acl.iter().filter(|e| e.cidr != entry.cidr).cloned().collect();
        entries.push(entry);
        entries.sort();
        Ok(vec![InstanceEvent::NetworkAccessChanged { entries }])
    }

    fn remove_acl_entry(&self, cidr: &str) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        if !spec.acl.iter().any(|e| e.cidr == cidr) {
            return Err(InstanceError::AclEntryNotFound { cidr: cidr.to_owned() });
        }
        let entries = spec.acl.iter().filter(|e| e.cidr != cidr).cloned().collect();
        Ok(vec![InstanceEvent::NetworkAccessChanged { entries }])
    }

    fn update(&self, cmd: UpdateInstance, catalog: &Catalog) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        let offering = offered(catalog, spec.service)?;
        let mut events = Vec::new();
        if let Some(version) = cmd.version.filter(|v| *v != spec.version) {
            check_upgrade(offering, &spec.version, &version)?;
            events.push(InstanceEvent::VersionUpgraded { from: spec.version.clone(), to: version });
        }
        let mut storage_gib = spec.storage_gib;
        let mut plan = lookup_plan(offering, &spec.plan).ok();
        if let Some(name) = cmd.plan.filter(|p| *p != spec.plan) {
            let new_plan = lookup_plan(offering, &name)?;
            // Storage never shrinks: a smaller plan keeps the volume it has.
            storage_gib = storage_gib.max(new_plan.storage_gib);
            plan = Some(new_plan);
            events.push(InstanceEvent::PlanChanged {
                from: spec.plan.clone(),
                to: name,
                resources: new_plan.resources,
                storage_gib,
            });
        }
        if let Some(requested) = cmd.storage_gib.filter(|s| *s != storage_gib) {
            if requested < storage_gib {
                return Err(invalid(
                    "/storage_gib",
                    "storage_never_shrinks",
                    format!("storage is {storage_gib} GiB and can only grow"),
                ));
            }
            if let Some(plan) = plan {
                check_storage(requested, plan)?;
            }
            events.push(InstanceEvent::StorageExpanded { from_gib: storage_gib, to_gib: requested });
        }
        // A version the customer picks replaces one a rollout holds.
        let mut pending = spec.pending_maintenance.clone();
        if events.iter().any(|e| matches!(e, InstanceEvent::VersionUpgraded { .. })) {
            pending.version = None;
        }
        let window = match cmd.maintenance_window.filter(|w| *w != spec.maintenance_window) {
            Some(window) => {
                window.check("/maintenance_window")?;
                events.push(InstanceEvent::MaintenanceWindowChanged { window: window.clone() });
                window
            }
            None => spec.maintenance_window.clone(),
        };
        if let Some(changes) = cmd.config {
            // The configuration asked for builds on what is held for the window, if anything is.
            let held = spec.pending_maintenance.configuration.as_ref();
            let mut config = held.map_or_else(|| spec.config.clone(), |p| p.config.clone());
            for (key, value) in changes {
                match value {
                    Some(value) => config.insert(key, value),
                    None => config.remove(&key),
                };
            }
            // Checked against the version the instance runs after this update.
            let version = events
                .iter()
                .find_map(|e| match e {
                    InstanceEvent::VersionUpgraded { to, .. } => Some(to.as_str()),
                    _ => None,
                })
                .unwrap_or(&spec.version);
            check_config(offering, version, &config, Some(&spec.config))?;
            let needs_restart =
                |k: &str| offering.config_key(k).is_some_and(|key| key.apply == ApplyMode::Restart);
            let restart = config_diff(&spec.config, &config).into_iter().filter(|k| needs_restart(k));
            let restart: Vec<String> = restart.collect();
            let hold = !restart.is_empty() && cmd.now.is_some_and(|now| !window.is_open(now));
            // What the cluster applies now: everything, or all but the held parameters, which keep the
            // values the instance runs with.
            let mut applied = config.clone();
            pending.configuration = if hold {
                for key in &restart {
                    match spec.config.get(key) {
                        Some(value) => applied.insert(key.clone(), value.clone()),
                        None => applied.remove(key),
                    };
                }
                Some(maintenance::PendingConfiguration { config, parameters: restart })
            } else {
                None
            };
            if pending != spec.pending_maintenance {
                events.push(InstanceEvent::PendingMaintenanceChanged { pending: pending.clone() });
            }
            let changed = config_diff(&spec.config, &applied);
            if !changed.is_empty() {
                let restart = changed.iter().filter(|k| needs_restart(k)).cloned().collect();
                events.push(InstanceEvent::ConfigurationChanged { config: applied, changed, restart });
            }
        }
        if pending != spec.pending_maintenance
            && !events.iter().any(|e| matches!(e, InstanceEvent::PendingMaintenanceChanged { .. }))
        {
            events.push(InstanceEvent::PendingMaintenanceChanged { pending });
        }
        if let Some(description) = cmd.description.filter(|d| *d != spec.description) {
            check_description(&description)?;
            events.push(InstanceEvent::DescriptionChanged { description });
        }
        if let Some(enabled) = cmd.deletion_protection.filter(|e| *e != spec.deletion_protection) {
            events.push(InstanceEvent::DeletionProtectionChanged { enabled });
        }
        Ok(events)
    }

    /// Applies what is held for the window: the version it holds, then the configuration it holds, with
    /// every parameter it changes (so the restart ones are named in `restart`).
    fn apply_maintenance(
        &self,
        trigger: maintenance::MaintenanceTrigger,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        if spec.pending_maintenance.is_empty() {
            return Ok(vec![]);
        }
        let mut events = vec![InstanceEvent::MaintenanceApplied { trigger }];
        if let Some(held) = spec.pending_maintenance.version.as_ref().filter(|v| v.to != spec.version) {
            events.push(InstanceEvent::VersionUpgraded { from: spec.version.clone(), to: held.to.clone() });
        }
        if let Some(held) = &spec.pending_maintenance.configuration {
            let changed = config_diff(&spec.config, &held.config);
            if !changed.is_empty() {
                let restart = changed.iter().filter(|k| held.parameters.contains(k)).cloned().collect();
                events.push(InstanceEvent::ConfigurationChanged {
                    config: held.config.clone(),
                    changed,
                    restart,
                });
            }
        }
        Ok(events)
    }

    fn deprovision(&self) -> Result<Vec<InstanceEvent>, InstanceError> {
        match self.lifecycle {
            Lifecycle::Absent => Err(InstanceError::NotFound),
            Lifecycle::Deprovisioning => Ok(vec![]),
            Lifecycle::Active if self.spec.as_ref().is_some_and(|s| s.deletion_protection) => {
                Err(InstanceError::DeletionProtected)
            }
            Lifecycle::Active => {
                // Every user goes with the instance, each by its own event, so the history says so.
                let users = self.spec.iter().flat_map(|s| &s.users);
                let mut events: Vec<InstanceEvent> =
                    users.map(|u| InstanceEvent::UserDeleted { name: u.name.clone() }).collect();
                events.push(InstanceEvent::DeprovisioningStarted {});
                Ok(events)
            }
        }
    }

    fn create_user(&self, name: String, role: String) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        users::check_new(&spec.users, spec.service, &name, &role)?;
        Ok(vec![InstanceEvent::UserCreated { name, role }])
    }

    fn delete_user(&self, name: String) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        users::find(&spec.users, &name)?;
        Ok(vec![InstanceEvent::UserDeleted { name }])
    }

    fn rotate_user_password(&self, name: String) -> Result<Vec<InstanceEvent>, InstanceError> {
        let spec = self.active_spec()?;
        users::find(&spec.users, &name)?;
        Ok(vec![InstanceEvent::UserPasswordRotationRequested { name }])
    }

    fn active_spec(&self) -> Result<&InstanceSpec, InstanceError> {
        match (self.lifecycle, &self.spec) {
            (Lifecycle::Active, Some(spec)) => Ok(spec),
            (Lifecycle::Deprovisioning, _) => Err(InstanceError::Deprovisioning),
            _ => Err(InstanceError::NotFound),
        }
    }
}

/// The offering of `service`; a catalog that no longer offers it refuses changes to its instances
/// (deprovisioning still works).
fn offered(
    catalog: &Catalog,
    service: ServiceType,
) -> Result<&crate::catalog::ServiceOffering, InstanceError> {
    catalog.offering(service).ok_or_else(|| {
        invalid(
            "/service",
            "offered_service",
            format!("{service} is not offered by this control plane's catalog"),
        )
    })
}

/// The keys whose value differs between `before` and `after`, sorted.
fn config_diff(before: &Config, after: &Config) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).cloned().collect()
}

fn spec_of(p: &InstanceProvisioned) -> InstanceSpec {
    InstanceSpec {
        id: p.instance_id,
        project: p.project.clone(),
        name: p.name.clone(),
        service: p.service,
        version: p.version.clone(),
        plan: p.plan.clone(),
        resources: p.resources,
        storage_gib: p.storage_gib,
        config: p.config.clone(),
        description: p.description.clone(),
        deletion_protection: p.deletion_protection,
        cluster: p.cluster.clone(),
        acl: Vec::new(),
        backup_schedules: Vec::new(),
        restore: None,
        maintenance_window: maintenance::MaintenanceWindow::default(),
        pending_maintenance: maintenance::PendingMaintenance::default(),
        archive_server: None,
        users: Vec::new(),
        migration: None,
        rolled_out: None,
    }
}

/// Convenience for building configuration maps in code and tests.
pub fn config<const N: usize>(entries: [(&str, ConfigValue); N]) -> Config {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

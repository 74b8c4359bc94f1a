//! The cqrs-es `Aggregate` of an instance: which command becomes which events, and how each event
//! changes the state (`Instance`'s queries and rules stay in the parent module).

use super::*;

impl Aggregate for Instance {
    const TYPE: &'static str = "instance";
    type Command = InstanceCommand;
    type Event = InstanceEvent;
    type Error = InstanceError;
    type Services = InstanceServices;

    async fn handle(
        &mut self,
        command: InstanceCommand,
        services: &InstanceServices,
        sink: &EventSink<Self>,
    ) -> Result<(), InstanceError> {
        if let Some(moving) = self.migration()
            && !command.is_migration_step()
            && !matches!(command, InstanceCommand::Provision(_))
        {
            return Err(InstanceError::Migrating { to: moving.to.clone() });
        }
        let events = match command {
            InstanceCommand::Provision(cmd) => self.provision(cmd, services).await?,
            InstanceCommand::Update(cmd) => self.update(cmd, &services.catalog)?,
            InstanceCommand::ReplaceAcl { entries, allow_public } => {
                self.replace_acl(&entries, allow_public)?
            }
            InstanceCommand::AddAclEntry { entry, allow_public } => {
                self.add_acl_entry(entry, allow_public)?
            }
            InstanceCommand::RemoveAclEntry { cidr } => self.remove_acl_entry(&cidr)?,
            InstanceCommand::PutBackupSchedule(schedule) => {
                let spec = self.active_spec()?;
                let schedules = schedules::put(&spec.backup_schedules, schedule)?;
                if schedules == spec.backup_schedules {
                    vec![]
                } else {
                    vec![InstanceEvent::BackupSchedulesChanged { schedules }]
                }
            }
            InstanceCommand::RemoveBackupSchedule { id } => {
                let spec = self.active_spec()?;
                if !spec.backup_schedules.iter().any(|s| s.id == id) {
                    return Err(InstanceError::ScheduleNotFound { id });
                }
                let schedules = spec.backup_schedules.iter().filter(|s| s.id != id).cloned().collect();
                vec![InstanceEvent::BackupSchedulesChanged { schedules }]
            }
            InstanceCommand::Restore(source) => {
                let spec = self.active_spec()?;
                let restore = restore::check_in_place(&source, spec.service, &spec.version)?;
                vec![InstanceEvent::RestoreRequested { restore }]
            }
            InstanceCommand::RotateCredentials => {
                self.active_spec()?;
                vec![InstanceEvent::CredentialsRotationRequested {}]
            }
            InstanceCommand::ApplyMaintenance { trigger } => self.apply_maintenance(trigger)?,
            InstanceCommand::HoldVersionUpgrade { to, rollout } => {
                let spec = self.active_spec()?;
                maintenance::hold_version(spec, offered(&services.catalog, spec.service)?, to, rollout)?
            }
            InstanceCommand::CreateUser { name, role } => self.create_user(name, role)?,
            InstanceCommand::DeleteUser { name } => self.delete_user(name)?,
            InstanceCommand::RotateUserPassword { name } => self.rotate_user_password(name)?,
            InstanceCommand::Deprovision => self.deprovision()?,
            InstanceCommand::StartMigration { migration_id, to, backup_id } => {
                self.start_migration(migration_id, to, backup_id)?
            }
            InstanceCommand::PlaceMigrationTarget { migration_id, source } => {
                self.place_migration_target(migration_id, &source)?
            }
            InstanceCommand::CompleteMigration { migration_id } => self.complete_migration(migration_id)?,
            InstanceCommand::FailMigration { migration_id, reason } => {
                self.fail_migration(migration_id, reason)?
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: InstanceEvent) {
        self.generation += 1;
        for aspect in event.aspects() {
            self.generations.set(*aspect, self.generation);
        }
        if let InstanceEvent::InstanceProvisioned(p) = &event {
            self.spec = Some(spec_of(p));
            self.lifecycle = Lifecycle::Active;
            return;
        }
        let Some(spec) = self.spec.as_mut() else {
            // Events never precede provisioning in a stream the aggregate wrote; ignore rather than panic.
            return;
        };
        match event {
            InstanceEvent::InstanceProvisioned(_) => {}
            InstanceEvent::VersionUpgraded { from, to } => {
                if spec.rolled_out.as_ref().is_some_and(|r| r.to != to) {
                    spec.rolled_out = None;
                }
                if spec.service == ServiceType::Postgresql
                    && let Some(server) = archive_server_after_upgrade(&spec.name, &from, &to)
                {
                    spec.archive_server = Some(server);
                }
                spec.version = to;
            }
            InstanceEvent::PlanChanged { to, resources, storage_gib, .. } => {
                spec.plan = to;
                spec.resources = resources;
                spec.storage_gib = storage_gib;
            }
            InstanceEvent::StorageExpanded { to_gib, .. } => spec.storage_gib = to_gib,
            InstanceEvent::ConfigurationChanged { config, .. } => spec.config = config,
            InstanceEvent::NetworkAccessChanged { entries } => spec.acl = entries,
            InstanceEvent::DescriptionChanged { description } => spec.description = description,
            InstanceEvent::DeletionProtectionChanged { enabled } => spec.deletion_protection = enabled,
            // the generation of the credentials aspect (set above) is all a rotation changes
            InstanceEvent::CredentialsRotationRequested {} => {}
            InstanceEvent::BackupSchedulesChanged { schedules } => spec.backup_schedules = schedules,
            InstanceEvent::RestoreRequested { restore } => spec.restore = Some(restore),
            InstanceEvent::DeprovisioningStarted {} => self.lifecycle = Lifecycle::Deprovisioning,
            InstanceEvent::MaintenanceWindowChanged { window } => spec.maintenance_window = window,
            InstanceEvent::PendingMaintenanceChanged { pending } => spec.pending_maintenance = pending,
            InstanceEvent::MaintenanceApplied { .. } => {
                let applied = std::mem::take(&mut spec.pending_maintenance);
                if let Some(version) = applied.version {
                    spec.rolled_out = Some(version);
                }
            }
            InstanceEvent::UserCreated { name, role } => {
                let user = users::User { name, role, generation: self.generation };
                let at = spec.users.partition_point(|u| u.name < user.name);
                spec.users.insert(at, user);
            }
            InstanceEvent::UserDeleted { name } => spec.users.retain(|u| u.name != name),
            InstanceEvent::UserPasswordRotationRequested { name } => {
                if let Some(user) = spec.users.iter_mut().find(|u| u.name == name) {
                    user.generation = self.generation;
                }
            }
            InstanceEvent::MigrationStarted { .. }
            | InstanceEvent::MigrationTargetPlaced { .. }
            | InstanceEvent::MigrationCompleted { .. }
            | InstanceEvent::MigrationFailed { .. } => self.apply_migration(event),
        }
    }
}

//! The API's wire types (the `wire` crate, shared with the CLI) and their conversions from the read
//! models, which only the API knows: the wire crate links no NATS.

pub use wire::*;

use domain::instance::InstanceSpec;
use projections::{
    BackupState as ViewState, BackupView, InstanceView, OperationKind, OperationState, OperationView,
};

/// A conversion between a read model's type and a wire type (both foreign here, so `From` cannot be
/// implemented).
pub(crate) trait Convert<T>: Sized {
    fn convert(value: T) -> Self;
}

impl From<FieldError> for crate::error::ApiError {
    fn from(e: FieldError) -> Self {
        Self::field(e.field, e.rule, e.detail)
    }
}

impl Convert<ViewState> for BackupState {
    fn convert(state: ViewState) -> Self {
        match state {
            ViewState::Requested => Self::Requested,
            ViewState::Running => Self::Running,
            ViewState::Completed => Self::Completed,
            ViewState::Failed => Self::Failed,
            ViewState::Deleting => Self::Deleting,
            ViewState::Deleted => Self::Deleted,
        }
    }
}

impl Convert<BackupState> for ViewState {
    fn convert(state: BackupState) -> Self {
        match state {
            BackupState::Requested => Self::Requested,
            BackupState::Running => Self::Running,
            BackupState::Completed => Self::Completed,
            BackupState::Failed => Self::Failed,
            BackupState::Deleting => Self::Deleting,
            BackupState::Deleted => Self::Deleted,
        }
    }
}

impl Convert<&BackupView> for Backup {
    fn convert(view: &BackupView) -> Self {
        Self {
            id: view.id,
            instance_id: view.source.instance_id,
            instance_name: view.source.instance_name.clone(),
            service: view.source.service.as_str().to_owned(),
            version: view.source.version.clone(),
            trigger: match &view.trigger {
                domain::BackupTrigger::Manual => "manual".to_owned(),
                domain::BackupTrigger::Schedule { schedule_id } => format!("schedule/{schedule_id}"),
                domain::BackupTrigger::Migration { migration_id } => format!("migration/{migration_id}"),
            },
            state: BackupState::convert(view.state),
            requested_at: view.requested_at,
            started_at: view.started_at,
            completed_at: view.finished_at,
            size_bytes: view.size_bytes,
            sha256: view.sha256.clone(),
            location: view.location.clone(),
            duration_ms: view.duration_ms,
            error: view.reason.clone(),
            verified: view.verified,
            verification_detail: view.verification_detail.clone(),
        }
    }
}

impl Convert<&InstanceView> for Instance {
    fn convert(view: &InstanceView) -> Self {
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
            // The configuration asked for: with what is held for the maintenance window (which
            // `pending_maintenance` names), so a client reads back what it wrote.
            config: config_json(
                spec.pending_maintenance.configuration.as_ref().map_or(&spec.config, |held| &held.config),
            ),
            description: spec.description.clone(),
            deletion_protection: spec.deletion_protection,
            cluster: spec.cluster.clone(),
            acl: spec.acl.iter().map(AclEntry::from).collect(),
            maintenance_window: (&spec.maintenance_window).into(),
            // Shown, never folded: when the window next opens depends on when one asks.
            pending_maintenance: wire::PendingMaintenance::of(spec, chrono::Utc::now()),
            restored_from: spec.restore.as_ref().map(|r| RestoredFrom {
                backup_id: r.backup_id,
                source_instance_id: r.source_instance_id,
                point_in_time: r.target_time,
            }),
            migration: spec.migration.as_ref().map(|m| Migration {
                id: m.id,
                from: m.from.clone(),
                to: m.to.clone(),
                backup_id: m.backup_id,
                phase: if m.target.is_some() { "restoring" } else { "backing_up" }.to_owned(),
            }),
            connection: view
                .observed
                .as_ref()
                .and_then(|o| o.network.as_ref()?.endpoint.as_ref())
                .filter(|_| !spec.acl.is_empty())
                .map(|e| Connection { host: e.host.clone(), port: e.port }),
            lifecycle: match view.instance.lifecycle() {
                domain::Lifecycle::Deprovisioning => Lifecycle::Deprovisioning,
                _ => Lifecycle::Active,
            },
            instance_version: view.version,
            status: InstanceStatus::convert(&view.status),
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
                config: o.config.clone(),
                reason: o.reason.clone(),
                acl: o.network.as_ref().map(|n| n.acl.clone()),
                reported_at: view.observed_at,
            }),
            last_drift: view.last_drift.as_ref().map(|d| Drift { at: d.at, objects: d.objects.clone() }),
            created_at: view.created_at,
            updated_at: view.updated_at,
        }
    }
}

impl Convert<OperationKind> for OperationType {
    fn convert(kind: OperationKind) -> Self {
        match kind {
            OperationKind::Provision => Self::Provision,
            OperationKind::Update => Self::Update,
            OperationKind::Deprovision => Self::Deprovision,
            OperationKind::RotateCredentials => Self::RotateCredentials,
            OperationKind::Backup => Self::Backup,
            OperationKind::DeleteBackup => Self::DeleteBackup,
            OperationKind::Restore => Self::Restore,
            OperationKind::ApplyMaintenance => Self::ApplyMaintenance,
            OperationKind::CreateUser => Self::CreateUser,
            OperationKind::DeleteUser => Self::DeleteUser,
            OperationKind::RotateUserPassword => Self::RotateUserPassword,
            OperationKind::Migrate => Self::Migrate,
        }
    }
}

impl Convert<&OperationView> for Operation {
    fn convert(op: &OperationView) -> Self {
        Self {
            id: op.id,
            operation_type: OperationType::convert(op.kind),
            state: match op.state {
                OperationState::InProgress => OperationStatus::InProgress,
                OperationState::Succeeded => OperationStatus::Succeeded,
                OperationState::Failed { .. } => OperationStatus::Failed,
            },
            instance_id: op.instance_id,
            instance_version: op.instance_version,
            backup_id: op.backup_id,
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

impl Convert<projections::Health> for Health {
    fn convert(h: projections::Health) -> Self {
        match h {
            projections::Health::Healthy => Self::Healthy,
            projections::Health::Reconciling => Self::Reconciling,
            projections::Health::Error => Self::Error,
        }
    }
}

impl Convert<Health> for projections::Health {
    /// `unknown` is never folded (`crate::liveness`); the list filters it after showing.
    fn convert(h: Health) -> Self {
        match h {
            Health::Healthy => Self::Healthy,
            Health::Reconciling | Health::Unknown => Self::Reconciling,
            Health::Error => Self::Error,
        }
    }
}

impl Convert<&projections::Status> for InstanceStatus {
    fn convert(s: &projections::Status) -> Self {
        Self {
            state: Health::convert(s.state),
            aspects: s.aspects.iter().map(|(a, h)| (a.as_str().to_owned(), Health::convert(*h))).collect(),
            reason: s.reason.clone(),
            pending_restart: s.pending_restart.clone(),
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

//! The backup scheduler: asks for each schedule's backups at the times its cron expression names, and
//! for the deletion of the backups its retention no longer keeps. Every backup, manual or scheduled, is
//! then the same: a `Backup` aggregate its cluster's agent carries out, and a deletion the backup worker
//! carries out and reports (`BackupDeleted`: the expiry).
//!
//! It runs in the control plane, not in the clusters: a scheduled backup is a decision recorded as an
//! event like any other (with the schedule as its trigger and `scheduler` as its actor), and its id is
//! derived from the schedule and the time it is due, so a scheduler that restarts, or runs twice, asks
//! for each due backup once (the second request of the same id changes nothing). A run missed while no
//! scheduler ran is made once when one runs again, not once per missed time.
//!
//! Backups outlive their instance: once its cluster reported it removed, they stay listed and restorable
//! for [`RETENTION_AFTER_DEPROVISION_DAYS`] (configurable), then the scheduler asks for their deletion
//! like any expiry. The anchors: Aiven keeps a deleted service's backups 41 days; STACKIT delays the
//! deletion 7 days. The longer one is the default, so a customer who deleted by mistake has weeks.

use std::collections::HashMap;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use domain::{
    BackupCommand, BackupSource, BackupTrigger, Lifecycle,
    backup::InstanceFacts,
    instance::schedules::{BackupSchedule, next_run},
};
use sha2::Digest as _;
use streams::{CommandMetadata, backups::BackupCommands};
use uuid::Uuid;

use crate::{
    OperationKind, ReadModel, ReadModels,
    backups::{BackupState, BackupView},
};

/// How long, by default, a deprovisioned instance's backups are kept after its cluster removed it.
pub const RETENTION_AFTER_DEPROVISION_DAYS: u32 = 41;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// backups asked for
    pub requested: usize,
    /// deletions asked for by retention
    pub expired: usize,
    /// commands that failed (retried next pass)
    pub failed: usize,
}

/// The id of the backup `schedule` makes at `due`: a UUIDv7 with the due time as its timestamp (so
/// scheduled backups list in time order) and the rest from a hash of both.
pub fn scheduled_backup_id(schedule: Uuid, due: DateTime<Utc>) -> Uuid {
    let digest = sha2::Sha256::digest(format!("{schedule}/{}", due.timestamp_millis()));
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(due.timestamp_millis().max(0) as u64, &random).into_uuid()
}

/// The latest time in `(after, until]` that `schedule` names.
fn latest_due(
    schedule: &BackupSchedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut due = None;
    let mut from = after;
    // Bounded: a minutely schedule over a long outage still ends (the latest is what counts).
    for _ in 0..100_000 {
        match next_run(schedule, from) {
            Some(next) if next <= until => {
                due = Some(next);
                from = next;
            }
            _ => break,
        }
    }
    due
}

/// The backups of `schedule` its retention no longer keeps at `now`: beyond the newest `keep_last`
/// completed ones (and the failed ones older than the oldest kept), and those older than `max_age_days`.
/// Only ended backups are deleted: one still being made is left alone.
fn expired<'a>(
    schedule: &BackupSchedule,
    backups: &[&'a BackupView],
    now: DateTime<Utc>,
) -> Vec<&'a BackupView> {
    let ended: Vec<&BackupView> = backups
        .iter()
        .copied()
        .filter(|b| matches!(b.state, BackupState::Completed | BackupState::Failed))
        .collect();
    let mut expired = Vec::new();
    if let Some(keep) = schedule.retention.keep_last {
        // `backups` is newest first.
        let completed: Vec<&BackupView> =
            ended.iter().copied().filter(|b| b.state == BackupState::Completed).collect();
        if let Some(oldest_kept) = completed.get(keep as usize - 1).map(|b| b.id) {
            expired.extend(ended.iter().copied().filter(|b| b.id < oldest_kept));
        }
    }
    if let Some(days) = schedule.retention.max_age_days {
        let limit = now - TimeDelta::days(i64::from(days));
        expired.extend(ended.iter().copied().filter(|b| b.requested_at < limit));
    }
    expired.sort_by_key(|b| b.id);
    expired.dedup_by_key(|b| b.id);
    expired
}

/// The scheduler's state: when each schedule was last looked at.
pub struct Scheduler {
    models: ReadModels,
    commands: BackupCommands,
    started: DateTime<Utc>,
    looked: HashMap<Uuid, DateTime<Utc>>,
    after_deprovision: TimeDelta,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("started", &self.started).finish_non_exhaustive()
    }
}

struct Due {
    source: BackupSource,
    facts: InstanceFacts,
    schedule: Uuid,
    backup: Uuid,
}

struct Expiry {
    project: String,
    instance: Uuid,
    backup: Uuid,
}

fn plan(
    model: &ReadModel,
    looked: &HashMap<Uuid, DateTime<Utc>>,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
    after_deprovision: TimeDelta,
) -> (Vec<Due>, Vec<Expiry>) {
    let (mut due, mut expiries) = (Vec::new(), Vec::new());
    for view in model.all_instances() {
        let spec = view.spec();
        let backups = model.backups().of_instance(&spec.project, spec.id, None, None, usize::MAX);
        // The instance is gone (its cluster reported it removed; the report's time is the removal's):
        // every ended backup expires once the retention after deprovisioning has passed. Until then its
        // schedules' own retention still applies below.
        if view.removed
            && let Some(removed_at) = view.observed_at
            && now >= removed_at + after_deprovision
        {
            let ended =
                backups.iter().filter(|b| matches!(b.state, BackupState::Completed | BackupState::Failed));
            expiries.extend(ended.map(|b| Expiry {
                project: spec.project.clone(),
                instance: spec.id,
                backup: b.id,
            }));
            continue;
        }
        for schedule in &spec.backup_schedules {
            let of_schedule: Vec<&BackupView> = backups
                .iter()
                .copied()
                .filter(|b| b.trigger == BackupTrigger::Schedule { schedule_id: schedule.id })
                .collect();
            for backup in expired(schedule, &of_schedule, now) {
                expiries.push(Expiry { project: spec.project.clone(), instance: spec.id, backup: backup.id });
            }
            if !schedule.enabled || view.instance.lifecycle() != Lifecycle::Active {
                continue;
            }
            let after = looked.get(&schedule.id).copied().unwrap_or(started);
            if let Some(at) = latest_due(schedule, after, now) {
                due.push(Due {
                    source: BackupSource::of(spec),
                    facts: InstanceFacts {
                        lifecycle: view.instance.lifecycle(),
                        ever_ready: view.observed.as_ref().is_some_and(|o| o.observed_generation.is_some()),
                    },
                    schedule: schedule.id,
                    backup: scheduled_backup_id(schedule.id, at),
                });
            }
        }
    }
    (due, expiries)
}

impl Scheduler {
    /// A scheduler over the read models, asking for backups through `commands`; schedules count as
    /// looked at `started` (a schedule's first backup is the first due after it).
    pub fn new(models: ReadModels, commands: BackupCommands, started: DateTime<Utc>) -> Self {
        let after_deprovision = TimeDelta::days(i64::from(RETENTION_AFTER_DEPROVISION_DAYS));
        Self { models, commands, started, looked: HashMap::new(), after_deprovision }
    }

    /// Keeps a deprovisioned instance's backups `after_deprovision` after its removal instead of the
    /// default [`RETENTION_AFTER_DEPROVISION_DAYS`].
    pub fn retention_after_deprovision(mut self, after_deprovision: TimeDelta) -> Self {
        self.after_deprovision = after_deprovision;
        self
    }

    /// One pass at `now`.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Pass {
        let (due, expiries) =
            plan(&self.models.read(), &self.looked, self.started, now, self.after_deprovision);
        let mut pass = Pass::default();
        for Due { source, facts, schedule, backup } in due {
            let (project, instance) = (source.project.clone(), source.instance_id);
            let command = BackupCommand::Request {
                source,
                trigger: BackupTrigger::Schedule { schedule_id: schedule },
                instance: facts,
            };
            let mut metadata = CommandMetadata::new(OperationKind::Backup, "scheduler");
            metadata.command_id = backup;
            match self.commands.execute(&project, instance, backup, command, metadata).await {
                Ok(_) => {
                    pass.requested += 1;
                    self.looked.insert(schedule, now);
                }
                // Never ready yet, or being deprovisioned: this time is skipped, not retried.
                Err(streams::ExecuteError::Rejected(e)) => {
                    tracing::info!(%schedule, error = %e, "a scheduled backup was not taken");
                    self.looked.insert(schedule, now);
                }
                Err(e) => {
                    tracing::warn!(%schedule, error = %e, "asking for a scheduled backup failed; retrying");
                    pass.failed += 1;
                }
            }
        }
        for Expiry { project, instance, backup } in expiries {
            let metadata = CommandMetadata::new(OperationKind::DeleteBackup, "retention");
            match self
                .commands
                .execute(&project, instance, backup, BackupCommand::Delete { ended: true }, metadata)
                .await
            {
                Ok(committed) if !committed.events.is_empty() => pass.expired += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%backup, error = %e, "expiring a backup failed; retrying");
                    pass.failed += 1;
                }
            }
        }
        pass
    }

    /// Passes every `period` until cancelled.
    pub async fn run(mut self, period: std::time::Duration) {
        loop {
            let pass = self.pass(Utc::now()).await;
            if pass != Pass::default() {
                tracing::info!(?pass, "backup schedules");
            }
            tokio::time::sleep(period).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::instance::schedules::Retention;

    use super::*;

    fn schedule(cron: &str, tz: &str) -> BackupSchedule {
        BackupSchedule {
            id: Uuid::nil(),
            name: "s".into(),
            cron: cron.into(),
            time_zone: tz.into(),
            enabled: true,
            retention: Retention { keep_last: Some(2), max_age_days: None },
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_daily_schedule_runs_daily_in_its_time_zone_and_a_long_outage_makes_one_backup() {
        let daily = schedule("30 2 * * *", "Europe/Berlin");
        // 02:30 in Berlin is 01:30 UTC in winter.
        assert_eq!(next_run(&daily, at("2026-12-01T00:00:00Z")), Some(at("2026-12-01T01:30:00Z")));
        assert_eq!(
            next_run(&daily, at("2026-12-01T01:30:00Z")),
            Some(at("2026-12-02T01:30:00Z")),
            "daily, not hourly"
        );
        // Three days without a scheduler: one backup, for the latest time missed.
        assert_eq!(
            latest_due(&daily, at("2026-12-01T00:00:00Z"), at("2026-12-04T12:00:00Z")),
            Some(at("2026-12-04T01:30:00Z"))
        );
        assert_eq!(latest_due(&daily, at("2026-12-01T02:00:00Z"), at("2026-12-01T03:00:00Z")), None);
    }

    fn completed(id: u128, requested_at: DateTime<Utc>) -> BackupView {
        BackupView {
            id: Uuid::from_u128(id),
            source: BackupSource {
                project: "acme".into(),
                instance_id: Uuid::nil(),
                instance_name: "orders".into(),
                cluster: "eu-1".into(),
                service: domain::ServiceType::Mongodb,
                version: "7.0".into(),
            },
            trigger: BackupTrigger::Schedule { schedule_id: Uuid::nil() },
            state: BackupState::Completed,
            requested_at,
            started_at: None,
            finished_at: None,
            location: None,
            size_bytes: None,
            sha256: None,
            duration_ms: None,
            reason: None,
            verified: None,
            verification_detail: None,
            deletion_operation: None,
            sequence: 1,
        }
    }

    #[test]
    fn max_age_days_keeps_a_backup_exactly_that_long_and_not_a_moment_longer() {
        let mut weekly = schedule("0 3 * * *", "UTC");
        weekly.retention = Retention { keep_last: None, max_age_days: Some(7) };
        let now = at("2026-12-08T03:00:00Z");
        let exactly = completed(1, now - TimeDelta::days(7));
        let older = completed(2, now - TimeDelta::days(7) - TimeDelta::milliseconds(1));
        let younger = completed(3, now - TimeDelta::days(7) + TimeDelta::milliseconds(1));
        let mut running = completed(4, now - TimeDelta::days(30));
        running.state = BackupState::Running;
        let expired: Vec<Uuid> =
            expired(&weekly, &[&younger, &exactly, &older, &running], now).iter().map(|b| b.id).collect();
        assert_eq!(expired, [older.id], "only the one older than 7 days, and never one still being made");
    }

    #[test]
    fn a_scheduled_backup_s_id_is_the_same_for_the_same_schedule_and_time_and_orders_by_time() {
        let (s, t) = (Uuid::now_v7(), at("2026-12-01T01:30:00Z"));
        assert_eq!(scheduled_backup_id(s, t), scheduled_backup_id(s, t));
        assert_ne!(scheduled_backup_id(s, t), scheduled_backup_id(Uuid::now_v7(), t));
        assert!(scheduled_backup_id(s, t) < scheduled_backup_id(s, t + TimeDelta::minutes(1)));
    }
}

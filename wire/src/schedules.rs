//! Backup schedules as clients send and read them.

use chrono::{DateTime, Utc};
use domain::instance::schedules::{BackupSchedule as DomainSchedule, Retention as DomainRetention, next_run};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How long a schedule's backups are kept: the last N, and/or none older than D days (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// keep this many of the schedule's newest completed backups (1 to 1000)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub keep_last: Option<u32>,
    /// delete the schedule's backups older than this many days (1 to 3650)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub max_age_days: Option<u32>,
}

/// A backup schedule as a client writes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupScheduleRequest {
    /// unique among the instance's schedules (a DNS-1123 label)
    #[schema(example = "nightly", min_length = 1, max_length = 63)]
    pub name: String,
    /// standard five-field cron expression: minute hour day-of-month month day-of-week
    #[schema(example = "30 2 * * *")]
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`)
    #[serde(default = "utc")]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// whether it makes backups (default true)
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// how long its backups are kept
    pub retention: Retention,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn enabled() -> bool {
    true
}

impl BackupScheduleRequest {
    /// The domain's schedule with id `id`.
    pub fn into_schedule(self, id: Uuid) -> DomainSchedule {
        DomainSchedule {
            id,
            name: self.name,
            cron: self.cron,
            time_zone: self.time_zone,
            enabled: self.enabled,
            retention: DomainRetention {
                keep_last: self.retention.keep_last,
                max_age_days: self.retention.max_age_days,
            },
        }
    }
}

/// A backup schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupSchedule {
    /// schedule id
    pub id: Uuid,
    /// name
    pub name: String,
    /// five-field cron expression
    pub cron: String,
    /// IANA time zone
    pub time_zone: String,
    /// whether it makes backups
    pub enabled: bool,
    /// how long its backups are kept
    pub retention: Retention,
    /// the next time it makes a backup, while enabled
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<DateTime<Utc>>,
}

impl From<&DomainSchedule> for BackupSchedule {
    fn from(s: &DomainSchedule) -> Self {
        Self {
            id: s.id,
            name: s.name.clone(),
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            enabled: s.enabled,
            retention: Retention { keep_last: s.retention.keep_last, max_age_days: s.retention.max_age_days },
            next_run_at: if s.enabled { next_run(s, Utc::now()) } else { None },
        }
    }
}

/// An instance's backup schedules, sorted by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupScheduleList {
    /// the schedules
    pub items: Vec<BackupSchedule>,
}

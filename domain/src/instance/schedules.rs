//! Backup schedules: part of an instance's desired state. A schedule is a standard five-field cron
//! expression (minute, hour, day of month, month, day of week) read in an IANA time zone, an enabled
//! flag, and a retention (keep the last N backups it made, and/or none older than D days). The control
//! plane's scheduler asks for the backups at the times it names; nothing runs a schedule in a cluster.

use std::str::FromStr as _;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InstanceError, Violation, check_dns_label};

/// Most schedules an instance may have.
pub const MAX_SCHEDULES: usize = 10;
/// Most backups a schedule may keep.
pub const MAX_KEEP_LAST: u32 = 1000;
/// Longest retention, in days.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// How long a schedule's backups are kept. At least one bound; both may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// keep this many of the schedule's newest backups
    pub keep_last: Option<u32>,
    /// delete the schedule's backups older than this many days
    pub max_age_days: Option<u32>,
}

/// One backup schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    /// schedule id
    pub id: Uuid,
    /// name, unique among the instance's schedules (a DNS-1123 label)
    pub name: String,
    /// five-field cron expression
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Europe/Berlin`
    pub time_zone: String,
    /// whether it makes backups
    pub enabled: bool,
    /// how long its backups are kept
    pub retention: Retention,
}

/// The time zone of a schedule.
pub fn time_zone(name: &str) -> Option<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(name).ok()
}

/// The first time after `after` that `schedule` names, if it names any.
pub fn next_run(
    schedule: &BackupSchedule,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let tz = time_zone(&schedule.time_zone)?;
    let next = cron_parser::parse(&schedule.cron, &after.with_timezone(&tz)).ok()?;
    Some(next.with_timezone(&chrono::Utc))
}

/// Checks a schedule on its own; `field` is its JSON pointer in the request (empty for the body).
fn check(schedule: &BackupSchedule, field: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut violation = |name: &str, rule: &'static str, message: String| {
        violations.push(Violation { field: format!("{field}/{name}"), rule, message });
    };
    if let Err(InstanceError::Invalid { message, .. }) = check_dns_label("name", &schedule.name) {
        violation("name", "dns1123_label", message);
    }
    // Five fields exactly: a six-field expression (with seconds, as CloudNativePG's ScheduledBackup takes)
    // read as five would shift every field by one and run far more often than meant.
    let fields = schedule.cron.split_whitespace().count();
    if fields != 5 {
        violation(
            "cron",
            "cron_five_fields",
            format!(
                "{:?} has {fields} fields; a schedule is five: minute hour day-of-month month day-of-week",
                schedule.cron
            ),
        );
    } else if cron_parser::parse(&schedule.cron, &chrono::Utc::now()).is_err() {
        violation("cron", "cron", format!("{:?} is not a cron expression", schedule.cron));
    }
    if time_zone(&schedule.time_zone).is_none() {
        violation(
            "time_zone",
            "iana_time_zone",
            format!("{:?} is not an IANA time zone such as Europe/Berlin or UTC", schedule.time_zone),
        );
    }
    let Retention { keep_last, max_age_days } = schedule.retention;
    if keep_last.is_none() && max_age_days.is_none() {
        violation("retention", "retention_bound", "give keep_last, max_age_days or both".into());
    }
    if keep_last.is_some_and(|n| !(1..=MAX_KEEP_LAST).contains(&n)) {
        violation("retention/keep_last", "range", format!("from 1 to {MAX_KEEP_LAST}"));
    }
    if max_age_days.is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d)) {
        violation("retention/max_age_days", "range", format!("from 1 to {MAX_RETENTION_DAYS}"));
    }
    violations
}

/// The instance's schedules after putting `schedule` (new, or replacing the one with its id), sorted by
/// name; every rule broken is named at once.
pub(super) fn put(
    existing: &[BackupSchedule],
    schedule: BackupSchedule,
) -> Result<Vec<BackupSchedule>, InstanceError> {
    let mut violations = check(&schedule, "");
    if existing.iter().any(|s| s.name == schedule.name && s.id != schedule.id) {
        violations.push(Violation {
            field: "/name".into(),
            rule: "unique_schedule_name",
            message: format!("the instance has a schedule called {:?}", schedule.name),
        });
    }
    let replacing = existing.iter().any(|s| s.id == schedule.id);
    if !replacing && existing.len() >= MAX_SCHEDULES {
        violations.push(Violation {
            field: "".into(),
            rule: "max_schedules",
            message: format!("an instance has at most {MAX_SCHEDULES} backup schedules"),
        });
    }
    match violations.len() {
        0 => {}
        1 => {
            let v = violations.remove(0);
            return Err(InstanceError::Invalid { field: v.field, rule: v.rule, message: v.message });
        }
        _ => return Err(InstanceError::InvalidFields(violations)),
    }
    let mut schedules: Vec<BackupSchedule> =
        existing.iter().filter(|s| s.id != schedule.id).cloned().collect();
    schedules.push(schedule);
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(schedules)
}

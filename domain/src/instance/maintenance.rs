//! Maintenance: a weekly window per instance, and the changes held for it. A configuration change whose
//! parameters need a restart of the service (catalog apply mode `restart`) asked outside the window is
//! held as *pending maintenance* in the aggregate: the desired state the cluster's agent reads keeps the
//! configuration it runs until the window opens (the control plane's maintenance scheduler then applies
//! what is pending) or until the customer asks to apply it now. Time is an input here, never read: the
//! caller passes `now`.

use chrono::{DateTime, Datelike as _, Duration as TimeDelta, NaiveTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use super::{InstanceError, Violation, rules::check_upgrade, rules::invalid, schedules::time_zone};
use crate::catalog::{Config, ServiceOffering};

/// Shortest window, in minutes.
pub const MIN_WINDOW_MINUTES: u32 = 30;
/// Longest window, in minutes (a day).
pub const MAX_WINDOW_MINUTES: u32 = 24 * 60;

/// Every IANA time zone name a window may be read in, as the OpenAPI document lists them.
pub fn time_zone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday
    Monday,
    /// Tuesday
    Tuesday,
    /// Wednesday
    Wednesday,
    /// Thursday
    Thursday,
    /// Friday
    Friday,
    /// Saturday
    Saturday,
    /// Sunday
    Sunday,
}

impl Weekday {
    fn chrono(self) -> chrono::Weekday {
        match self {
            Self::Monday => chrono::Weekday::Mon,
            Self::Tuesday => chrono::Weekday::Tue,
            Self::Wednesday => chrono::Weekday::Wed,
            Self::Thursday => chrono::Weekday::Thu,
            Self::Friday => chrono::Weekday::Fri,
            Self::Saturday => chrono::Weekday::Sat,
            Self::Sunday => chrono::Weekday::Sun,
        }
    }
}

/// A weekly maintenance window: from `start` on `day`, local time in `time_zone`, for
/// `duration_minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// the day it opens
    pub day: Weekday,
    /// when it opens, `HH:MM` (24-hour clock), local time
    pub start: String,
    /// how long it stays open, 30 to 1440 minutes
    pub duration_minutes: u32,
    /// IANA time zone `start` is read in
    pub time_zone: String,
}

impl Default for MaintenanceWindow {
    /// The platform's default: Sunday 02:00 UTC for four hours. Projects have no settings of their own
    /// today, so this is every instance's window unless its provision or a PATCH names another.
    fn default() -> Self {
        Self { day: Weekday::Sunday, start: "02:00".into(), duration_minutes: 240, time_zone: "UTC".into() }
    }
}

fn start_time(start: &str) -> Option<NaiveTime> {
    // Exactly `HH:MM`: chrono alone would also take `2:00`.
    let bytes = start.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return None;
    }
    NaiveTime::parse_from_str(start, "%H:%M").ok()
}

impl MaintenanceWindow {
    /// Every rule the window breaks, each at `field` + its member's name (e.g. `/maintenance_window`).
    pub fn check(&self, field: &str) -> Result<(), InstanceError> {
        let mut violations = Vec::new();
        if start_time(&self.start).is_none() {
            violations.push(Violation {
                field: format!("{field}/start"),
                rule: "time_of_day",
                message: format!("{:?} is not a time of day as HH:MM, e.g. 02:30", self.start),
            });
        }
        if !(MIN_WINDOW_MINUTES..=MAX_WINDOW_MINUTES).contains(&self.duration_minutes) {
            violations.push(Violation {
                field: format!("{field}/duration_minutes"),
                rule: "range",
                message: format!("from {MIN_WINDOW_MINUTES} to {MAX_WINDOW_MINUTES} minutes"),
            });
        }
        if time_zone(&self.time_zone).is_none() {
            violations.push(Violation {
                field: format!("{field}/time_zone"),
                rule: "iana_time_zone",
                message: format!(
                    "{:?} is not an IANA time zone such as Europe/Berlin or UTC",
                    self.time_zone
                ),
            });
        }
        match violations.len() {
            0 => Ok(()),
            1 => {
                let v = violations.remove(0);
                Err(InstanceError::Invalid { field: v.field, rule: v.rule, message: v.message })
            }
            _ => Err(InstanceError::InvalidFields(violations)),
        }
    }

    /// The openings of the window around `now` (from a week before to a week after), in UTC, in order.
    /// A start that falls in a daylight-saving gap opens at the first local time after the gap.
    fn openings(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let (Some(tz), Some(start)) = (time_zone(&self.time_zone), start_time(&self.start)) else {
            return Vec::new();
        };
        let today = now.with_timezone(&tz).date_naive();
        (-8..=8)
            .map(|days| today + TimeDelta::days(days))
            .filter(|date| date.weekday() == self.day.chrono())
            .filter_map(|date| {
                let local = date.and_time(start);
                (0..=2)
                    .find_map(|hours| tz.from_local_datetime(&(local + TimeDelta::hours(hours))).earliest())
                    .map(|t| t.with_timezone(&Utc))
            })
            .collect()
    }

    fn duration(&self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.duration_minutes))
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.openings(now).into_iter().any(|start| start <= now && now < start + self.duration())
    }

    /// When the window next opens after `now`, or when it opened if it is open at `now`.
    pub fn next_opening(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.openings(now).into_iter().find(|start| now < *start + self.duration())
    }
}

/// A configuration change held for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfiguration {
    /// the whole configuration the instance will run once it is applied
    pub config: Config,
    /// the parameters whose change needs a restart and is held, sorted
    pub parameters: Vec<String>,
}

/// A version upgrade the platform rolls out (an admin's rollout), held for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingVersion {
    /// the version the instance ran when the upgrade was held
    pub from: String,
    /// the version it runs once applied
    pub to: String,
    /// the rollout that asked for it
    pub rollout: Uuid,
}

/// What is held for the maintenance window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMaintenance {
    /// a configuration change needing a restart, if one is held
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<PendingConfiguration>,
    /// a version upgrade the platform rolls out, if one is held (absent from what was stored before
    /// rollouts existed, so it reads as none)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<PendingVersion>,
}

impl PendingMaintenance {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.configuration.is_none() && self.version.is_none()
    }
}

/// The major of a catalog version: what precedes its first dot (`16` → `16`, `2.7` → `2`).
pub fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// Checks that the platform may roll `from` → `to` out to instances of `offering` without asking their
/// owners: an upgrade the catalog allows (`check_upgrade`) within one major. A move to another major
/// changes the data format or the API (`pg_upgrade`, a MongoDB feature compatibility version, Grafana's
/// breaking changes) and stays the customer's decision, by `PATCH`. Fields are the rollout request's.
pub fn check_rollout(offering: &ServiceOffering, from: &str, to: &str) -> Result<(), InstanceError> {
    if !offering.offers_version(from) {
        return Err(invalid(
            "/from_version",
            "offered_version",
            format!("{} offers versions {}, not {from:?}", offering.service, offering.versions.join(", ")),
        ));
    }
    if from == to {
        return Err(invalid("/to_version", "newer_version", format!("instances at {from} already run it")));
    }
    check_upgrade(offering, from, to).map_err(|e| match e {
        InstanceError::Invalid { rule, message, .. } => {
            InstanceError::Invalid { field: "/to_version".into(), rule, message }
        }
        other => other,
    })?;
    if major(from) != major(to) {
        return Err(invalid(
            "/to_version",
            "same_major",
            format!(
                "a rollout stays within a major version ({from} → {to} changes major {} to {}); \
                 a major upgrade is each customer's, by PATCH",
                major(from),
                major(to)
            ),
        ));
    }
    Ok(())
}

/// Who applied pending maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceTrigger {
    /// the window opened (the control plane's maintenance scheduler)
    Window,
    /// the customer asked to apply it now
    Customer,
}

/// The events holding `to` for the window of the instance `spec` describes, asked by `rollout`: none when
/// it runs `to` or holds it already. The upgrade is held even while the window is open (the maintenance
/// scheduler applies it at its next pass), so every instance of a rollout goes through the same steps.
pub(super) fn hold_version(
    spec: &super::InstanceSpec,
    offering: &ServiceOffering,
    to: String,
    rollout: Uuid,
) -> Result<Vec<super::InstanceEvent>, InstanceError> {
    if spec.version == to || spec.pending_maintenance.version.as_ref().is_some_and(|v| v.to == to) {
        return Ok(vec![]);
    }
    check_rollout(offering, &spec.version, &to)?;
    let version = PendingVersion { from: spec.version.clone(), to, rollout };
    let pending = PendingMaintenance { version: Some(version), ..spec.pending_maintenance.clone() };
    Ok(vec![super::InstanceEvent::PendingMaintenanceChanged { pending }])
}

//! Maintenance: a weekly window per instance, and the changes held for it. A configuration change whose
//! parameters need a restart of the service (catalog apply mode `restart`) asked outside the window is
//! held as *pending maintenance* in the aggregate: the desired state the cluster's agent reads keeps the
//! configuration it runs until the window opens (the control plane's maintenance scheduler then applies
//! what is pending) or until the customer asks to apply it now. Time is an input here, never read: the
//! caller passes `now`.

use chrono::{DateTime, Datelike as _, Duration as TimeDelta, NaiveTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use super::{InstanceError, Violation, schedules::time_zone};
use crate::catalog::Config;

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

/// What is held for the maintenance window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMaintenance {
    /// a configuration change needing a restart, if one is held
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<PendingConfiguration>,
}

impl PendingMaintenance {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.configuration.is_none()
    }
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

//! The rules a command is checked against, each naming the field and rule it guards: names, the
//! description, versions and upgrade paths, plans and storage, and configuration parameters.

use super::{InstanceError, MAX_DESCRIPTION_CHARS, MAX_STORAGE_GIB, Violation};
use crate::catalog::{ApplyMode, Config, ServiceOffering, UpgradePath, Version};

pub(super) fn invalid(
    field: impl Into<String>,
    rule: &'static str,
    message: impl Into<String>,
) -> InstanceError {
    InstanceError::Invalid { field: field.into(), rule, message: message.into() }
}

/// Projects no tenant may create instances in: a project's instances live in namespace `cp-<project>`, and
/// `cp-system` is the cluster agent's own (`cluster-agent/src/rbac.rs` `NAMESPACE`), holding its
/// credentials and the backup store's keys.
pub const RESERVED_PROJECTS: &[&str] = &["system"];

/// Longest project name: its namespace `cp-<project>` must itself be a DNS-1123 label (63 characters).
pub const MAX_PROJECT_LEN: usize = 60;

/// Checks a project a new instance goes into: a DNS-1123 label short enough for its namespace, and not
/// reserved.
pub fn check_project(project: &str) -> Result<(), InstanceError> {
    check_dns_label("project", project)?;
    if project.len() > MAX_PROJECT_LEN {
        return Err(invalid(
            "/project",
            "max_length",
            format!(
                "at most {MAX_PROJECT_LEN} characters: its namespace cp-{project} must be a DNS-1123 label"
            ),
        ));
    }
    if RESERVED_PROJECTS.contains(&project) {
        return Err(invalid(
            "/project",
            "not_reserved",
            format!("{project:?} is reserved: its namespace is the cluster agent's own"),
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 label (RFC 1123): 1–63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric.
pub fn check_dns_label(field: &str, value: &str) -> Result<(), InstanceError> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("/{field}"),
            "dns1123_label",
            format!(
                "{value:?} is not a DNS-1123 label: 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

pub(super) fn check_description(description: &str) -> Result<(), InstanceError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            "/description",
            "max_length",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if description.chars().any(char::is_control) {
        return Err(invalid("/description", "no_control_characters", "must not contain control characters"));
    }
    Ok(())
}

pub(super) fn check_version(offering: &ServiceOffering, version: &str) -> Result<(), InstanceError> {
    if offering.offers_version(version) {
        Ok(())
    } else {
        Err(invalid(
            "/version",
            "offered_version",
            format!("{} offers versions {}, not {version:?}", offering.service, offering.versions.join(", ")),
        ))
    }
}

pub(super) fn lookup_plan<'a>(
    offering: &'a ServiceOffering,
    plan: &str,
) -> Result<&'a crate::Plan, InstanceError> {
    offering.plan(plan).ok_or_else(|| {
        let names: Vec<_> = offering.plans.iter().map(|p| p.name.as_str()).collect();
        invalid(
            "/plan",
            "offered_plan",
            format!("{} offers plans {}, not {plan:?}", offering.service, names.join(", ")),
        )
    })
}

pub(super) fn check_storage(storage_gib: u32, plan: &crate::Plan) -> Result<(), InstanceError> {
    if storage_gib < plan.storage_gib {
        return Err(invalid(
            "/storage_gib",
            "storage_at_least_plan",
            format!("plan {} needs at least {} GiB", plan.name, plan.storage_gib),
        ));
    }
    if storage_gib > MAX_STORAGE_GIB {
        return Err(invalid(
            "/storage_gib",
            "storage_at_most",
            format!("must be at most {MAX_STORAGE_GIB} GiB"),
        ));
    }
    Ok(())
}

/// Checks a whole configuration of an instance running `version`, naming every bad parameter: unknown
/// ones, ones that version does not have, values out of their range or type, and (with `before`, the
/// configuration an update starts from) changes to immutable ones.
pub(super) fn check_config(
    offering: &ServiceOffering,
    version: &str,
    config: &Config,
    before: Option<&Config>,
) -> Result<(), InstanceError> {
    let mut violations = Vec::new();
    let names = || offering.config_keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ");
    for (key, value) in config {
        let field = format!("/config/{key}");
        let Some(spec) = offering.config_key(key) else {
            let message = format!("{} accepts the keys {}", offering.service, names());
            violations.push(Violation { field, rule: "known_config_key", message });
            continue;
        };
        if !spec.available_in(version) {
            let since = spec.since.as_deref().unwrap_or_default();
            let message = format!("{key} is offered from version {since} on; this instance runs {version}");
            violations.push(Violation { field, rule: "parameter_version", message });
            continue;
        }
        if let Err(message) = spec.kind.check(value) {
            violations.push(Violation { field, rule: "config_value", message });
        }
    }
    if let Some(before) = before {
        for key in offering.config_keys.iter().filter(|k| k.apply == ApplyMode::Immutable) {
            if before.get(&key.name) != config.get(&key.name) {
                violations.push(Violation {
                    field: format!("/config/{}", key.name),
                    rule: "immutable_parameter",
                    message: format!(
                        "{} is set at provision only; provision a new instance to change it",
                        key.name
                    ),
                });
            }
        }
    }
    into_result(violations)
}

/// No violation is `Ok`; one is [`InstanceError::Invalid`]; several, sorted by field, are
/// [`InstanceError::InvalidFields`], so one answer names them all.
pub(super) fn into_result(mut violations: Vec<Violation>) -> Result<(), InstanceError> {
    violations.sort_by(|a, b| a.field.cmp(&b.field));
    match violations.len() {
        0 => Ok(()),
        1 => {
            let Violation { field, rule, message } = violations.remove(0);
            Err(InstanceError::Invalid { field, rule, message })
        }
        _ => Err(InstanceError::InvalidFields(violations)),
    }
}

pub(super) fn check_upgrade(offering: &ServiceOffering, from: &str, to: &str) -> Result<(), InstanceError> {
    check_version(offering, to)?;
    // Offered versions always parse (a catalog test keeps it so); a stored version that no longer parses
    // compares as the oldest, which only ever allows moving forward.
    let parse = |v: &str| v.parse::<Version>().unwrap_or(Version { major: 0, minor: 0 });
    let (old, new) = (parse(from), parse(to));
    if new < old {
        return Err(invalid("/version", "no_downgrade", format!("cannot downgrade from {from} to {to}")));
    }
    if offering.upgrade_path == UpgradePath::OneMajorAtATime {
        let next_major =
            offering.versions.iter().filter_map(|v| v.parse::<Version>().ok()).find(|v| v.major > old.major);
        if let Some(next) = next_major
            && new.major > next.major
        {
            return Err(invalid(
                "/version",
                "one_major_at_a_time",
                format!(
                    "{} upgrades one major version at a time: upgrade {from} to {}.{} first",
                    offering.service, next.major, next.minor
                ),
            ));
        }
    }
    Ok(())
}

/// The versions an instance of `offering` at `from` may be upgraded to, by the same rule a change is
/// checked with.
pub fn upgrade_targets<'a>(offering: &'a ServiceOffering, from: &str) -> Vec<&'a str> {
    offering
        .versions
        .iter()
        .map(String::as_str)
        .filter(|to| *to != from && check_upgrade(offering, from, to).is_ok())
        .collect()
}

//! Users: per-application database users of an instance, each with a name and a role from its service's
//! catalog, created, deleted and given a new password one at a time (issue 27).
//!
//! The control plane decides *which* users exist and with what role; their passwords are made by the
//! cluster's agent and kept in the cluster only (a Kubernetes Secret per user), exactly as the instance's
//! own credentials are: no event, read model or log carries one. Every change of the users is a change of
//! the [`Aspect::Users`](super::Aspect::Users) aspect, so an operation on a user completes when the cluster
//! reports the users applied, whatever else rolls out.
//!
//! Commands (all refused on an instance that is not active, and checked by [`check_name`] and
//! [`check_role`], which an edge such as the API or an Open Service Broker facade can run first):
//!
//! | command | events | refusals |
//! | --- | --- | --- |
//! | `CreateUser { name, role }` | `UserCreated` | 422 `/name` `user_name` or `user_name_reserved`; 422 `/role` `offered_role`; 422 `` `users_supported` (a service whose users the agent does not make: none today); 422 `/name` `max_items`; 409 [`UserExists`](super::InstanceError::UserExists) |
//! | `DeleteUser { name }` | `UserDeleted` | 404 [`UserNotFound`](super::InstanceError::UserNotFound) |
//! | `RotateUserPassword { name }` | `UserPasswordRotationRequested` | 404 [`UserNotFound`](super::InstanceError::UserNotFound) |
//!
//! Deprovisioning removes every user: the deprovision emits `UserDeleted` for each before
//! `DeprovisioningStarted`.

use serde::{Deserialize, Serialize};

use super::{InstanceError, rules::invalid};
use crate::catalog::ServiceType;

/// Most users an instance may have.
pub const MAX_USERS: usize = 100;
/// Longest user name: PostgreSQL truncates identifiers to `NAMEDATALEN - 1` = 63 bytes (PostgreSQL docs,
/// *Lexical Structure*, 4.1.1), so a longer one would not be the name the engine stores.
pub const MAX_USER_NAME_LEN: usize = 63;

/// Names no user may take, whatever the service: each service's admin user (`app`, CloudNativePG's
/// application owner; MongoDB's `root`; InfluxDB's and Grafana's `admin`), the roles CloudNativePG keeps
/// for itself and refuses to manage (v1.30.0 `pkg/postgres/roles.go`, `IsRoleReserved`: `postgres`,
/// `streaming_replica`), and PostgreSQL's reserved role names (`public`, `none`, `current_user`,
/// `current_role`, `session_user`: `CREATE ROLE` refuses them, PostgreSQL docs *CREATE ROLE*).
pub const RESERVED_USER_NAMES: &[&str] = &[
    "admin",
    "app",
    "root",
    "postgres",
    "streaming_replica",
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
];

/// Prefixes no user name may start with: PostgreSQL's own roles (`pg_`) and CloudNativePG's (`cnpg_`),
/// which CloudNativePG reports as `reserved` and never manages (v1.30.0 `pkg/postgres/roles.go`).
pub const RESERVED_USER_PREFIXES: &[&str] = &["pg_", "cnpg_"];

/// The services whose users the cluster agent makes: PostgreSQL (CloudNativePG's managed roles),
/// MongoDB (a Job running mongosh's user commands), InfluxDB (a Job making an authorization on the
/// instance's bucket) and Grafana (a Job making a service account with the role, and a token of it); the
/// last two hand the token the service made to the user's Secret. A service added to the catalog is
/// refused users (rule `users_supported`) until the agent makes them.
pub const USER_SERVICES: &[ServiceType] =
    &[ServiceType::Postgresql, ServiceType::Mongodb, ServiceType::Influxdb, ServiceType::Grafana];

/// The roles a user of `service` may have, as the catalog offers them:
///
/// - PostgreSQL: `readwrite` (membership of `pg_read_all_data` and `pg_write_all_data`) and `readonly`
///   (`pg_read_all_data`), PostgreSQL's predefined roles since 14 (PostgreSQL docs, *Predefined Roles*):
///   reading, and writing, every table, view and sequence; not creating objects, which stays with the
///   application database's owner, the instance's own user;
/// - MongoDB: `readWrite` and `read`, granted on every database as `readWriteAnyDatabase` and
///   `readAnyDatabase` (MongoDB manual, *Built-In Roles*);
/// - InfluxDB: a `write` or `read` token on the instance's bucket (InfluxDB v2 API,
///   `POST /api/v2/authorizations`);
/// - Grafana: a service account with the `Editor` or `Viewer` role (Grafana HTTP API,
///   `POST /api/serviceaccounts`).
///
/// Roles are code, like services: the agent renders each.
pub fn user_roles(service: ServiceType) -> &'static [&'static str] {
    match service {
        ServiceType::Postgresql => &["readwrite", "readonly"],
        ServiceType::Mongodb => &["readWrite", "read"],
        ServiceType::Influxdb => &["write", "read"],
        ServiceType::Grafana => &["Editor", "Viewer"],
    }
}

/// One user of an instance, as the aggregate keeps it. No password: that is the cluster's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// the user's name in the engine
    pub name: String,
    /// its role, one of [`user_roles`] of the instance's service
    pub role: String,
    /// the instance version of the event that last asked the cluster for something of this user (its
    /// creation, or the last rotation of its password): the user is applied once the cluster reports
    /// this generation of it
    pub generation: u64,
}

/// Checks a user name, sent at `field` (`/name`): 1 to 63 of `a-z`, `0-9` and `_`, starting with a letter
/// and not ending with `_` (an identifier every engine takes unquoted, and a DNS label once `_` becomes
/// `-`, so the Secret holding its password can be named after it), neither reserved nor the admin user's.
/// Needs nothing but the request, so an edge can run it first.
pub fn check_name(field: &str, name: &str) -> Result<(), InstanceError> {
    let syntax = (1..=MAX_USER_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.ends_with('_');
    if !syntax {
        return Err(invalid(
            field,
            "user_name",
            format!(
                "{name:?} is not a user name: 1 to {MAX_USER_NAME_LEN} lowercase letters, digits or '_', starting \
                 with a letter and not ending with '_'"
            ),
        ));
    }
    if RESERVED_USER_NAMES.contains(&name) {
        return Err(invalid(
            field,
            "user_name_reserved",
            format!(
                "{name:?} is reserved (an admin user of the service, a role the operator keeps, or a name the \
                 engine refuses); reserved: {}",
                RESERVED_USER_NAMES.join(", ")
            ),
        ));
    }
    if let Some(prefix) = RESERVED_USER_PREFIXES.iter().find(|p| name.starts_with(**p)) {
        return Err(invalid(
            field,
            "user_name_reserved",
            format!(
                "names starting with {prefix:?} are reserved for the engine's and the operator's own roles"
            ),
        ));
    }
    Ok(())
}

/// Checks a role of a user of `service`, sent at `field` (`/role`), against the catalog's roles.
pub fn check_role(field: &str, service: ServiceType, role: &str) -> Result<(), InstanceError> {
    let roles = user_roles(service);
    if roles.contains(&role) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "offered_role",
            format!("{service} users have the roles {}, not {role:?}", roles.join(", ")),
        ))
    }
}

/// Checks that the cluster agent makes users of `service`.
pub fn check_supported(service: ServiceType) -> Result<(), InstanceError> {
    if USER_SERVICES.contains(&service) {
        Ok(())
    } else {
        Err(invalid(
            "",
            "users_supported",
            format!(
                "{service} instances cannot have users yet: the cluster agent makes users of {} only",
                USER_SERVICES.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

/// Checks a new user of an instance of `service` that has `users`.
pub(super) fn check_new(
    users: &[User],
    service: ServiceType,
    name: &str,
    role: &str,
) -> Result<(), InstanceError> {
    check_name("/name", name)?;
    check_role("/role", service, role)?;
    check_supported(service)?;
    if users.iter().any(|u| u.name == name) {
        return Err(InstanceError::UserExists { name: name.to_owned() });
    }
    if users.len() >= MAX_USERS {
        return Err(invalid(
            "/name",
            "max_items",
            format!("the instance already has {MAX_USERS} users, the most it may"),
        ));
    }
    Ok(())
}

/// The user called `name`, or [`InstanceError::UserNotFound`].
pub(super) fn find<'a>(users: &'a [User], name: &str) -> Result<&'a User, InstanceError> {
    users.iter().find(|u| u.name == name).ok_or_else(|| InstanceError::UserNotFound { name: name.to_owned() })
}

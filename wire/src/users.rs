//! Users of an instance: per-application database users, each with a role from the service's catalog.
//! Their passwords are made in the instance's cluster and read from there (`UserCredentials`), never
//! stored by the control plane.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST …/users`: a new user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    /// the user's name in the engine: 1 to 63 lowercase letters, digits or `_`, starting with a letter and
    /// not ending with `_`; not reserved (the service's admin user, `postgres`, `streaming_replica`,
    /// `admin`, `root`, `app`, `public`, names starting `pg_` or `cnpg_`, …)
    #[schema(
        example = "reporting",
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z]([a-z0-9_]*[a-z0-9])?$"
    )]
    pub name: String,
    /// the user's role, from the service's catalog: PostgreSQL `readwrite` or `readonly`, MongoDB
    /// `readWrite` or `read`, InfluxDB `write` or `read` (a token on the instance's bucket), Grafana
    /// `Editor` or `Viewer` (a service account's token)
    #[schema(example = "readonly")]
    pub role: String,
}

/// Where a user stands in the instance's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// the engine has the user as last asked (created, or with its latest password)
    Applied,
    /// being applied
    Pending,
    /// the engine cannot apply it; see `reason`
    Error,
}

/// One user of an instance. No password: read it with `GET …/users/{name}/credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// its name
    pub name: String,
    /// its role
    pub role: String,
    /// applied, pending or error
    pub state: UserState,
    /// why the engine cannot apply it, in the error state
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The users of an instance, sorted by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    /// the users
    pub users: Vec<User>,
    /// version of the instance's desired state; also its ETag
    pub instance_version: u64,
}

//! Connection credentials of an instance, as the cluster holds them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a client connects with. Read from the cluster at request time; never stored by the control plane.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    /// user to connect as
    pub username: String,
    /// its password
    pub password: String,
    /// host name inside the instance's cluster (the instance's `connection` is the address from outside,
    /// when it has an ACL)
    pub host: String,
    /// port
    pub port: u16,
}

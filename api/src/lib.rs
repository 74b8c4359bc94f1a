//! The control plane's REST API.
//!
//! Architecture invariant: this is the only crate that knows HTTP — status codes, headers, problem+json
//! and the OpenAPI document. Handlers turn requests into domain commands, run them through
//! `streams::instances::InstanceCommands`, and read from the `projections` read model; they never touch
//! JetStream directly.

pub mod auth;
pub mod catalog_file;
pub mod dto;
pub mod error;
pub mod extract;
pub mod limits;
pub mod liveness;
pub mod metrics;
pub mod openapi;
pub mod osb;
pub mod routes;
pub mod state;

pub use error::ApiError;
pub use routes::app;
pub use state::{AppState, StartupError};

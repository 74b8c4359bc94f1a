//! Wire types of the REST API, shared by the API, the CLI (`cpctl`) and the tests. Separate from the
//! domain's types on purpose: the API's JSON is a contract with clients, the domain's serde form is the
//! event log's, and each changes on its own schedule. Every type reads and writes (a client parses what
//! the server writes); conversions from the domain live here, from the read models in the API.
//!
//! One file per resource; the types are re-exported here so handlers, clients and the OpenAPI document
//! name them from one place.

mod backups;
mod catalog;
mod clusters;
mod credentials;
mod dead_letters;
mod history;
mod instances;
mod network;
mod operations;
mod problem;
mod rollouts;
mod schedules;
mod status;
mod users;

pub use backups::{Backup, BackupList, BackupState};
pub use catalog::{
    Apply, Catalog, CatalogParameter, CatalogPlan, CatalogVersion, ParameterType, ServiceCatalog,
};
pub use clusters::{
    AgentReport, Cluster, ClusterRequest, ClusterState, ClusterStatus, DrainRequest, MigrateRequest,
};
pub use credentials::Credentials;
pub use dead_letters::{DeadLetter, DeadLetterPage};
pub use history::{
    ChainBreak, ChainVerification, DiffParams, FieldChange, HistoryEntry, HistoryPage, HistoryParams,
    HistorySource, InstanceDiff, InstanceParams, changes,
};
pub use instances::{
    Instance, InstanceList, Lifecycle, MaintenanceItem, MaintenanceWindow, Migration, PendingMaintenance,
    ProvisionRequest, Resources, RestoreFrom, RestoreRequest, RestoredFrom, Service, UpdateRequest, Weekday,
    config_json, config_value,
};
pub use network::{Acl, AclAddRequest, AclEntry, AclReplaceRequest, Connection};
pub use operations::{Operation, OperationError, OperationStatus, OperationType};
pub use problem::{FieldError, Problem};
pub use rollouts::{Rollout, RolloutList, RolloutProgress, RolloutRequest, RolloutStep, RolloutTarget};
pub use schedules::{BackupSchedule, BackupScheduleList, BackupScheduleRequest, Retention};
pub use status::{Condition, Drift, Health, InstanceStatus, Observed};
pub use users::{User, UserList, UserRequest, UserState};

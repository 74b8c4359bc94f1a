//! The control plane's domain model: what an instance is, which changes to it are allowed, and which
//! facts (events) a change produces.
//!
//! Architecture invariant: this crate does no I/O. It knows nothing about NATS, HTTP or Kubernetes and
//! runs no async runtime; the one outside capability it needs (reserving a name across instances) is a
//! trait, [`NameRegistry`], implemented elsewhere.

pub mod backup;
pub mod catalog;
pub mod instance;
pub mod names;
pub mod observed;
pub mod operation;
pub mod placement;

pub use backup::{Backup, BackupCommand, BackupError, BackupEvent, BackupSource, BackupTrigger};
pub use catalog::{Catalog, ConfigValue, Plan, Resources, ServiceType, Version};
pub use instance::{
    Instance, InstanceCommand, InstanceError, InstanceEvent, InstanceServices, Lifecycle, ProvisionInstance,
    UpdateInstance,
};
pub use names::{NameRegistry, NameReservationError};
pub use operation::OperationKind;
pub use placement::{Cluster, place};

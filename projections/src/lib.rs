//! Read models folded from the event stream.
//!
//! * [`instances`]: the pure fold from event batches to instance and operation views.
//! * [`runner`]: keeps a read model current from JetStream and tells waiters how far it has applied.
//!
//! Architecture invariant: folds are pure and idempotent per stream sequence (a read model remembers the
//! last sequence it applied and ignores anything at or below it). Folding reuses the domain's own
//! `Aggregate::apply`, so the read side can never disagree with the write side about what an event means.

pub mod instances;
pub mod runner;
pub mod status;

pub use instances::{InstanceView, OperationKind, OperationState, OperationView, ReadModel};
pub use runner::{Projection, ProjectionError};
pub use status::{Aspect, Health, Status};

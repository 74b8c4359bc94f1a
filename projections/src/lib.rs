//! Read models folded from the event stream.
//!
//! * [`instances`]: the pure fold from stream messages to instance and operation records.
//! * [`backup_scheduler`]: asks for scheduled backups and for the deletions retention calls for.
//! * [`backup_worker`]: the control plane's actions on the backup store (verify, delete), reported as facts.
//! * [`backups`]: the fold of backups' events and their clusters' facts into backup records.
//! * [`status`]: desired compared with observed, per aspect.
//! * [`leader`]: runs the singleton's work in exactly one replica at a time, through a lease.
//! * [`liveness`]: marks clusters whose agents fell silent unreachable.
//! * [`maintenance_scheduler`]: applies what is held for an instance's maintenance window once it opens.
//! * [`rollouts`]: holds each announced version rollout's upgrade for the instances it moves.
//! * [`migrations`]: takes moves between clusters step by step, and starts the moves drains call for.
//! * [`intake`]: moves each cluster's facts from its bounded intake onto the event stream, at a bounded rate.
//! * [`projector`]: folds the stream into the read-model bucket (the `cp-projector` process).
//! * [`runner`]: the read models as an API replica sees them, following the bucket.
//! * [`rebuild`]: folding the whole stream from scratch and comparing with the live read models.
//! * [`singleton`]: the leading replica's work (fold, intake gate, liveness, backup scheduler and worker).
//!
//! Architecture invariant: folds are pure and idempotent per stream sequence (every record remembers the
//! last sequence folded into it and ignores anything at or below it). Folding reuses the domain's own
//! `Aggregate::apply`, so the read side can never disagree with the write side about what an event means.
//! Only the projector writes read models; API replicas only read them.

pub mod audit;
pub mod backup_scheduler;
pub mod backup_worker;
pub mod backups;
pub mod facts;
pub mod instances;
pub mod intake;
pub mod leader;
pub mod liveness;
pub mod maintenance_scheduler;
pub mod migrations;
pub mod projector;
pub mod rebuild;
pub mod rollouts;
pub mod runner;
pub mod singleton;
pub mod status;
pub mod store_access;

pub use backups::{BackupState, BackupView, Backups};
pub use instances::{
    Checkpoint, DriftRecord, InstanceView, OperationKind, OperationRecord, OperationState, OperationView,
    ReadModel, UserState, UserView, user_views,
};
pub use projector::{Projector, ProjectorMetrics};
pub use runner::{ProjectionError, ReadModels};
pub use status::{Aspect, Health, Status};

//! JetStream as the control plane's event store and message bus.
//!
//! * [`store`]: a cqrs-es [`cqrs_es::EventStore`] over JetStream, usable by any aggregate that implements
//!   [`StreamAggregate`] — the crate a cqrs-es user could pick instead of `postgres-es`.
//! * [`topology`]: every stream, bucket and subject name, and every setting, created or updated idempotently.
//! * [`instances`], [`names`], [`idempotency`], [`clusters`]: the instance-specific parts of the write path.
//! * [`cluster_feed`]: what each cluster's agent reads, and the NATS rights its identity holds.
//! * [`read_models`]: the bucket the projector writes read models to and API replicas follow.
//!
//! Architecture invariant: this is the only crate that knows JetStream names, subjects and settings.
//! It knows nothing about HTTP.

pub mod accounts;
pub mod backups;
pub mod chain;
pub mod cluster_feed;
pub mod clusters;
pub mod connection;
pub mod credentials;
pub mod dead_letters;
pub mod envelope;
pub mod feed;
pub mod group_commit;
pub mod history;
pub mod idempotency;
pub mod identities;
pub mod instances;
pub mod intake;
mod kv_create;
pub mod lease;
pub mod liveness;
pub mod names;
pub mod observed;
pub mod read_models;
pub mod rollouts;
pub mod store;
pub mod store_access;
pub mod topology;

pub use envelope::{CommandMetadata, DecodeError, EventBatch, MessageHeaders, headers};
pub use store::{
    CommitMode, Committed, Current, ExecuteError, JetStreamContext, JetStreamStore, Landed, StreamAggregate,
};
pub use topology::{Settings, Topology, TopologyError};

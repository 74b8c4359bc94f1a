//! A Kubernetes API simulator. It speaks the subset of the Kubernetes REST API that the cluster agent
//! (through the real `kube` client) and `kubectl get` use: discovery, get / list / watch with
//! resourceVersion, bookmarks and 410 Gone, create, server-side apply with field managers, merge patch,
//! the status subresource, delete with finalizers and owner-reference garbage collection, label selectors,
//! and CustomResourceDefinitions. Simulated controllers make StatefulSets and CloudNativePG clusters
//! ready after a delay; faults (image pull failure, crash loop, failing or slow API calls) are injected
//! through `/sim/faults`. `/sim/requests` counts requests by verb and resource.
//!
//! It stands in for a cluster in tests and in the local demo; it is not a conformance-tested apiserver.

mod backup_job;
mod barman;
mod cnpg;
pub mod controllers;
pub mod load_balancer;
pub mod roles;
pub mod server;
pub mod store;
mod token_job;

pub use server::{Simulator, SimulatorOptions};

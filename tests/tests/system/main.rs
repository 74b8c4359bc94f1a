//! The end-to-end suite as one test binary: each file was a binary of its own, and linking
//! twenty-eight ~120 MB executables cost CI minutes and gigabytes of disk. Every test still starts
//! its own nats-server, so sharing a process shares nothing but the harness code. `secrets.rs` stays a
//! binary of its own: it installs the process's global log subscriber to read every log line.

mod admin_identity;
mod auth;
mod backup_checks;
mod backup_schedules;
mod backups;
mod catalog;
mod concurrency;
mod configuration;
mod credentials;
mod dashboard;
mod dead_letters;
mod dry_run;
mod faults;
mod feed;
mod fleet;
mod helm_charts;
mod history;
mod hostile_agent;
mod images;
mod lifecycle;
mod maintenance;
mod migration;
mod network_access;
mod oidc;
mod openapi_conformance;
mod osb;
mod osb_conformance;
mod ownership;
mod read_modify_write;
mod read_your_writes;
mod restore;
mod roles;
mod rollouts;
mod status;
mod users;
mod validation;

//! The agent's integration tests as one test binary (one link instead of sixteen ~120 MB ones).
//! Scenarios on a real kube-apiserver start their own; nothing is shared between tests but code.

#[macro_use]
mod common;
mod api_faults;
mod backup_jobs;
mod backup_scripts;
mod backups;
mod barman;
mod cnpg_rollout;
mod configuration;
mod converge;
mod egress;
mod faults;
mod fixture;
mod jetstream;
mod job_scripts;
mod leader;
mod least_privilege;
mod netpol_cyclonus;
mod network;
mod pg_major_upgrade;
mod pg_settings_script;
mod pod_security;
mod render;
mod replica_set;
mod restore_users;
mod rotation;
mod user_jobs;
mod user_jobs_grafana;
mod user_jobs_rbac;
mod users;
mod workloads;

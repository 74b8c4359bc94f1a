//! `--wait`: follows an operation until it ends, showing its progress on stderr (the result goes to
//! stdout, so `-o json --wait` still prints one parsable document). A failed operation is an error
//! carrying the reason the cluster reported.

use std::time::{Duration, Instant};

use wire::{Instance, Operation, OperationStatus};

use crate::client::Client;

/// How often to ask.
const POLL: Duration = Duration::from_millis(500);

/// Why waiting ended without success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WaitError {
    /// the operation failed
    #[error("operation {id} failed: {reason}")]
    Failed {
        /// the operation
        id: uuid::Uuid,
        /// what the cluster (or the API) reported
        reason: String,
    },
    /// it did not end in time
    #[error("operation {id} still {state} after {waited:?}; it goes on (`cpctl operations get {id} --wait`)")]
    TimedOut {
        /// the operation
        id: uuid::Uuid,
        /// where it was
        state: String,
        /// how long we waited
        waited: Duration,
    },
}

/// Waits until operation `operation` of `project` succeeds (returned) or fails, at most `timeout`.
pub(crate) async fn operation(
    client: &Client,
    project: &str,
    operation: &Operation,
    timeout: Duration,
) -> anyhow::Result<Operation> {
    let started = Instant::now();
    let mut last_line = String::new();
    let path = format!("/v1/projects/{project}/operations/{}", operation.id);
    loop {
        let current: Operation = client.get(&path, &[]).await?;
        let line = progress(client, project, &current).await;
        if line != last_line {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last_line = line;
        }
        match current.state {
            OperationStatus::Succeeded => return Ok(current),
            OperationStatus::Failed => {
                let reason = current.error.as_ref().map_or_else(
                    || "no reason given".to_owned(),
                    |e| {
                        if e.reason.is_empty() {
                            e.detail.clone()
                        } else {
                            format!("{}: {}", e.reason, e.detail)
                        }
                    },
                );
                return Err(WaitError::Failed { id: current.id, reason }.into());
            }
            OperationStatus::Pending | OperationStatus::InProgress => {}
        }
        if started.elapsed() >= timeout {
            let state = crate::output::wire_name(&current.state);
            return Err(WaitError::TimedOut { id: current.id, state, waited: timeout }.into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line on where the operation and its instance are.
async fn progress(client: &Client, project: &str, operation: &Operation) -> String {
    let state = crate::output::wire_name(&operation.state);
    let kind = crate::output::wire_name(&operation.operation_type);
    let path = format!("/v1/projects/{project}/instances/{}", operation.instance_id);
    match client.get::<Instance>(&path, &[]).await {
        Ok(instance) => {
            let aspects: Vec<String> = instance
                .status
                .aspects
                .iter()
                .map(|(aspect, health)| format!("{aspect}={}", crate::output::wire_name(health)))
                .collect();
            let reason = instance.status.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            format!(
                "{kind} {state}: instance {} {}{reason} [{}]",
                instance.name,
                crate::output::wire_name(&instance.status.state),
                aspects.join(" ")
            )
        }
        // A deprovisioned instance is gone before its operation ends.
        Err(_) => format!("{kind} {state}"),
    }
}

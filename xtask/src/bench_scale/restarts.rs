//! Restarts in steady state, each by SIGKILL: an agent (time until it has reconciled its cluster's
//! instances again, and the Kubernetes writes that caused), the projector (time until its checkpoint
//! covers a change made while it was down) and an API replica (time until ready, and until its read models
//! cover the stream).

use std::time::Duration;

use super::stack::Stack;
use futures::StreamExt as _;

use crate::process::{counter, quiet};

/// What the restarts measured.
pub(super) struct Restarts {
    pub(super) agent_instances: usize,
    pub(super) agent_caught_up: Duration,
    /// Kubernetes writes the restarted agent made, the CRD install at its start excepted
    pub(super) agent_writes: u64,
    pub(super) projector_caught_up: Duration,
    pub(super) api_ready: Duration,
    pub(super) api_caught_up: Duration,
}

const PATIENCE: Duration = Duration::from_secs(300);

pub(super) async fn measure(
    stack: &mut Stack,
    http: &reqwest::Client,
    agent_instances: usize,
    changed: (&str, &str),
) -> anyhow::Result<Restarts> {
    // An agent.
    let restarted = stack.restart_agent(0).await?;
    let metrics = stack.agents[0].service.metrics();
    while counter(http, &metrics, "cp_agent_reconciles").await? < agent_instances as u64 {
        anyhow::ensure!(restarted.elapsed() < PATIENCE, "the restarted agent did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let agent_caught_up = restarted.elapsed();
    quiet(http, std::slice::from_ref(&metrics)).await?;
    // `--install-crd` writes the CRD at every start; production installs it from deploy/.
    let agent_writes = counter(http, &metrics, "cp_agent_kube_writes").await?.saturating_sub(1);

    // The projector, with a change made while it is down.
    stack.projector.kill().await?;
    let (project, id) = changed;
    let api = crate::api_client::client(&stack.token)?;
    let response = api
        .patch(format!("{}/v1/projects/{project}/instances/{id}", stack.api.url))
        .json(&serde_json::json!({"description": "changed while the projector was down"}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == reqwest::StatusCode::ACCEPTED, "PATCH: {}", response.status());
    let last = stack.topology.events.clone().info().await?.state.last_sequence;
    // The checkpoint's writes, as they happen (the projector writes it after the records it covers).
    let bucket = streams::read_models::ReadModelBucket::new(&stack.topology);
    let mut checkpoints = bucket.store().watch(streams::read_models::CHECKPOINT_KEY).await?;
    let restarted = stack.restart_projector().await?;
    let caught_up = async {
        while let Some(entry) = checkpoints.next().await {
            let checkpoint: projections::Checkpoint = serde_json::from_slice(&entry?.value)?;
            if checkpoint.sequence >= last {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the checkpoint watch ended")
    };
    tokio::time::timeout(PATIENCE, caught_up)
        .await
        .map_err(|_| anyhow::anyhow!("the restarted projector did not catch up"))??;
    let projector_caught_up = restarted.elapsed();

    // An API replica.
    let last = stack.topology.events.clone().info().await?.state.last_sequence;
    let (restarted, ready) = stack.restart_api().await?;
    let api_ready = ready - restarted;
    loop {
        let readiness: serde_json::Value =
            http.get(format!("{}/readyz", stack.api.url)).send().await?.json().await?;
        if readiness["read_model_sequence"].as_u64().unwrap_or(0) >= last {
            break;
        }
        anyhow::ensure!(restarted.elapsed() < PATIENCE, "the restarted API's read models did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let api_caught_up = restarted.elapsed();
    Ok(Restarts {
        agent_instances,
        agent_caught_up,
        agent_writes,
        projector_caught_up,
        api_ready,
        api_caught_up,
    })
}

impl Restarts {
    pub(super) fn print(&self) {
        println!(
            "  agent restart (SIGKILL), {} instances on its cluster: reconciled again after {:.2} s; Kubernetes writes: {} (the CRD install excepted)",
            self.agent_instances,
            self.agent_caught_up.as_secs_f64(),
            self.agent_writes
        );
        println!(
            "  projector restart (SIGKILL), one change made while down: checkpoint past it after {:.2} s",
            self.projector_caught_up.as_secs_f64()
        );
        println!(
            "  API replica restart (SIGKILL): ready after {:.2} s, read models at the stream's end after {:.2} s",
            self.api_ready.as_secs_f64(),
            self.api_caught_up.as_secs_f64()
        );
    }
}

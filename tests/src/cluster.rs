//! A simulated Kubernetes cluster with the control plane's agent on it, for end-to-end tests.

use std::{net::SocketAddr, time::Duration};

use cluster_agent::{AgentConfig, Metrics, counting_client};
use k8s_sim::{Simulator, SimulatorOptions};

use crate::TestApi;

/// A simulator on a loopback port whose workloads take `ready_delay` to become ready.
pub async fn simulator(ready_delay: Duration) -> (Simulator, SocketAddr) {
    let sim = Simulator::new(SimulatorOptions { ready_delay, ..SimulatorOptions::default() });
    let address = sim.serve("127.0.0.1:0".parse().expect("an address")).await.expect("a simulator");
    (sim, address)
}

/// Runs the agent of `cluster` against the API server at `address`, on the API's nats-server, until the
/// returned task is aborted.
pub async fn agent(
    api: &TestApi,
    cluster: &str,
    address: SocketAddr,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    agent_with_backups(api, cluster, address, None).await
}

/// The same, with backups going to `backup_store`.
pub async fn agent_with_backups(
    api: &TestApi,
    cluster: &str,
    address: SocketAddr,
    backup_store: Option<cluster_agent::render::backup::StoreTarget>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    // The agent's own identity in its own account, with only what `streams::accounts` imports for it.
    let identity = api.agent_identity(cluster);
    let nats = identity
        .connect_options()
        .custom_inbox_prefix(streams::cluster_feed::agent_inbox_prefix(cluster))
        .connect(api.nats_server.address())
        .await
        .expect("connect as the agent");
    agent_connected(nats, cluster, address, backup_store, streams::Settings::default())
}

/// Runs the agent of `cluster` against the API server at `address` on `nats` (a connection as the
/// cluster's agent, with its inbox prefix), with the control plane's `settings`, until the returned task
/// is aborted.
pub fn agent_connected(
    nats: async_nats::Client,
    cluster: &str,
    address: SocketAddr,
    backup_store: Option<cluster_agent::render::backup::StoreTarget>,
    settings: streams::Settings,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let metrics = Metrics::default();
    let config = AgentConfig {
        cluster: cluster.into(),
        client: counting_client(
            kube::Config::new(format!("http://{address}").parse().expect("a URL")),
            &metrics,
        )
        .expect("a client"),
        nats,
        settings,
        concurrency: 8,
        resync: Duration::from_secs(300),
        install_crd: true,
        metrics,
        backup_store,
        // Often, so that a test sees a silent cluster within seconds (`TestApi::start_with_cluster_silence`).
        heartbeat: Duration::from_millis(250),
        election: None,
    };
    tokio::spawn(cluster_agent::run(config))
}

//! The deployment under test, every part a release binary in a process of its own as in production: a
//! nats-server (`sync_interval: always`), one `k8s-sim` process serving every simulated cluster on a port
//! of its own, one `cluster-agent` per cluster with only its cluster's NATS rights, the projector and one
//! API replica. The simulators share a process because they are the test's scenery, not the code under
//! test: a hundred runtimes of their own would only take CPU from the agents on a two-core machine.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use streams::{Settings, Topology, cluster_feed};
use testkit::{NatsServer, NkeyUser, Sync};
use tokio::process::{Child, Command};

use crate::process::{free_port, rss_kib, serving, simulator_addresses};

/// A process of the stack and where it serves.
pub(super) struct Service {
    pub(super) process: Child,
    /// base URL (`http://127.0.0.1:<port>`)
    pub(super) url: String,
}

impl Service {
    pub(super) fn pid(&self) -> anyhow::Result<u32> {
        self.process.id().ok_or_else(|| anyhow::anyhow!("the process exited"))
    }

    pub(super) fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid()?)
    }

    pub(super) fn metrics(&self) -> String {
        format!("{}/metrics", self.url)
    }

    /// SIGKILL: no shutdown, nothing flushed.
    pub(super) async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.start_kill()?;
        self.process.wait().await?;
        Ok(())
    }
}

/// One cluster's agent.
pub(super) struct Agent {
    pub(super) cluster: String,
    pub(super) kube: String,
    identity: NkeyUser,
    pub(super) service: Service,
}

pub(super) struct Stack {
    pub(super) server: NatsServer,
    pub(super) topology: Topology,
    simulators: Child,
    pub(super) agents: Vec<Agent>,
    pub(super) projector: Service,
    pub(super) api: Service,
    pub(super) token: String,
    launch: Launch,
}

/// What starting a process of the stack takes.
struct Launch {
    bin_dir: PathBuf,
    /// the control plane's URL, with its credentials
    nats_url: String,
    /// the URL without credentials (agents bring their own)
    nats_address: String,
    tokens_file: tempfile::NamedTempFile,
    clusters: usize,
}

pub(super) fn cluster_name(n: usize) -> String {
    format!("c{n}")
}

impl Stack {
    pub(super) async fn start(bin_dir: &Path, clusters: usize) -> anyhow::Result<Self> {
        let server = NatsServer::start_with(Sync::Always);
        let nats = server.connect().await;
        let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await?;

        let address_file = tempfile::NamedTempFile::new()?;
        let simulators = Command::new(bin_dir.join("k8s-sim"))
            .args(["--ready-delay-ms", "0", "--clusters", &clusters.to_string()])
            // A short history: each change kept holds its object, and a hundred clusters' worth of the
            // default held gigabytes; a watch that falls behind gets 410 and lists again, as from a real one.
            .args(["--history", "500", "--address-file"])
            .arg(address_file.path())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let kube = simulator_addresses(address_file.path()).await?;

        let token = api::auth::new_token();
        let tokens_file = tempfile::NamedTempFile::new()?;
        let entry = serde_json::json!([{
            "name": "bench", "sha256": api::auth::hash_token(&token), "subject": "benchmark",
            "platform_admin": true, "projects": {"*": "admin"},
        }]);
        std::fs::write(tokens_file.path(), entry.to_string())?;
        let launch = Launch {
            bin_dir: bin_dir.to_owned(),
            nats_url: server.url(),
            nats_address: server.address(),
            tokens_file,
            clusters,
        };
        // The API registers the clusters (their feed streams) before any agent looks for its feed.
        let api = launch.api().await?;
        let mut agents = Vec::new();
        for (n, kube) in kube.into_iter().enumerate() {
            let cluster = cluster_name(n);
            cluster_feed::apply(&topology.jetstream, &topology.settings, &cluster).await?;
            // Each agent with its own identity and only its cluster's rights, as deployed.
            let account = streams::accounts::agent_account(&topology.settings, &cluster);
            let identity = server.add_agent_account(&account.to_value());
            let service = launch.agent(&cluster, &kube, &identity).await?;
            agents.push(Agent { cluster, kube, identity, service });
        }
        let projector = launch.projector().await?;
        Ok(Self { server, topology, simulators, agents, projector, api, token, launch })
    }

    /// SIGKILLs agent `n` and starts it again; returns the moment it was started.
    pub(super) async fn restart_agent(&mut self, n: usize) -> anyhow::Result<Instant> {
        self.agents[n].service.kill().await?;
        let restarted = Instant::now();
        let agent = &self.agents[n];
        let service = self.launch.agent(&agent.cluster, &agent.kube, &agent.identity).await?;
        self.agents[n].service = service;
        Ok(restarted)
    }

    /// SIGKILLs the projector and starts it again; returns the moment it was started.
    pub(super) async fn restart_projector(&mut self) -> anyhow::Result<Instant> {
        self.projector.kill().await?;
        let restarted = Instant::now();
        self.projector = self.launch.projector().await?;
        Ok(restarted)
    }

    /// SIGKILLs the API replica and starts it again; returns the moment it was started and the moment
    /// it answered ready.
    pub(super) async fn restart_api(&mut self) -> anyhow::Result<(Instant, Instant)> {
        self.api.kill().await?;
        let restarted = Instant::now();
        self.api = self.launch.api().await?;
        Ok((restarted, Instant::now()))
    }

    /// Every agent's metrics URL.
    pub(super) fn agent_metrics(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.service.metrics()).collect()
    }

    /// Resident memory of all agents together, in KiB.
    pub(super) fn agents_rss_kib(&self) -> anyhow::Result<u64> {
        self.agents.iter().map(|a| a.service.rss_kib()).sum()
    }

    /// Messages each agent's consumer has yet to deliver or have acknowledged.
    pub(super) async fn agent_lags(&self) -> anyhow::Result<Vec<u64>> {
        let mut lags = Vec::with_capacity(self.agents.len());
        for agent in &self.agents {
            // One request per agent: the consumer's info, without first asking for the stream's.
            let feed = self
                .topology
                .jetstream
                .get_stream_no_info(cluster_feed::desired_stream_name(
                    &self.topology.settings,
                    &agent.cluster,
                ))
                .await?;
            let info = feed
                .consumer_info(cluster_feed::agent_consumer_name(&agent.cluster))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            lags.push(info.num_pending + info.num_ack_pending as u64);
        }
        Ok(lags)
    }

    pub(super) fn simulators_rss_kib(&self) -> u64 {
        self.simulators.id().and_then(|pid| rss_kib(pid).ok()).unwrap_or(0)
    }

    pub(super) fn simulators_pid(&self) -> Option<u32> {
        self.simulators.id()
    }

    pub(super) fn nats_pid(&self) -> Option<u32> {
        self.server.pid()
    }
}

impl Launch {
    async fn agent(&self, cluster: &str, kube: &str, identity: &NkeyUser) -> anyhow::Result<Service> {
        let port = free_port()?;
        let process = Command::new(self.bin_dir.join("cluster-agent"))
            .args(["--cluster", cluster, "--nats-url", &self.nats_address, "--kube-url", kube])
            .arg("--install-crd")
            .arg("--nats-nkey")
            .arg(&identity.seed_file)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        serving(&reqwest::Client::new(), &format!("{url}/metrics"), "an agent").await?;
        Ok(Service { process, url })
    }

    async fn projector(&self) -> anyhow::Result<Service> {
        let port = free_port()?;
        let process = Command::new(self.bin_dir.join("cp-projector"))
            .args(["--nats-url", &self.nats_url, "run", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        serving(&reqwest::Client::new(), &format!("{url}/metrics"), "the projector").await?;
        Ok(Service { process, url })
    }

    /// Starts an API replica; returns once it answers ready.
    async fn api(&self) -> anyhow::Result<Service> {
        let port = free_port()?;
        let clusters: Vec<String> =
            (0..self.clusters).map(|n| format!("{}=bench", cluster_name(n))).collect();
        let process = Command::new(self.bin_dir.join("cp-api"))
            .env("CP_NATS_URL", &self.nats_url)
            .env("CP_LISTEN", format!("127.0.0.1:{port}"))
            .env("CP_CLUSTERS", clusters.join(","))
            .env("CP_API_TOKENS_FILE", self.tokens_file.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{url}/readyz")).send().await
                && response.status().is_success()
            {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the API did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Service { process, url })
    }
}

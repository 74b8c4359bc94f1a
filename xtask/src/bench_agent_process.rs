//! An agent as deployed, measured from outside: the `cluster-agent` and `k8s-sim` release binaries as
//! processes of their own, so the agent's resident memory is its own. Provisions `--instances` through
//! the event store, waits until its agent reports each ready, then prints the agent's resident memory
//! per instance, and restarts it with SIGKILL: time until it has reconciled every instance again, and the
//! Kubernetes writes the restart caused (the goal is none: nothing changed). The first part of the scale
//! benchmark of issue 17; the rest (many clusters, the HTTP API, the projector's and the API's memory)
//! is not built yet.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use domain::{InstanceCommand, ProvisionInstance};
use futures::StreamExt as _;
use streams::{
    CommandMetadata, Settings, cluster_feed, instances::InstanceCommands, observed::ObservedMessage,
};
use testkit::NatsServer;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Options of the agent-process benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// instances on the agent's cluster
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// provisions per second
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// where the release binaries are (`cargo build --release -p cluster-agent -p k8s-sim`)
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

const CLUSTER: &str = "c1";

/// Resident memory of a process, in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// A counter of the agent's /metrics (`<name>_total`).
async fn metric(http: &reqwest::Client, metrics: &str, name: &str) -> anyhow::Result<u64> {
    let text = http.get(metrics).send().await?.text().await?;
    let line = text.lines().find(|l| l.starts_with(&format!("{name}_total "))).unwrap_or_default();
    Ok(line.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64)
}

/// Waits until the agent has made no Kubernetes request for a second (its watches open, its work done),
/// so a memory sample or a count of writes is taken at rest.
async fn quiet(http: &reqwest::Client, metrics: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let requests = metric(http, metrics, "cp_agent_kube_requests").await?;
        if requests != last {
            (last, since) = (requests, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the agent did not come to rest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Agent {
    process: Child,
    metrics: String,
}

async fn start_agent(
    options: &Options,
    server: &NatsServer,
    seed: &std::path::Path,
    kube: &str,
) -> anyhow::Result<Agent> {
    let port = free_port()?;
    let process = Command::new(options.bin_dir.join("cluster-agent"))
        .args(["--cluster", CLUSTER, "--nats-url", &server.address(), "--kube-url", kube, "--install-crd"])
        .arg("--nats-nkey")
        .arg(seed)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(&metrics).send().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the agent did not serve /metrics");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Agent { process, metrics })
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await?;
    cluster_feed::apply(&topology.jetstream, &topology.settings, CLUSTER).await?;
    let identity = server.add_user(&cluster_feed::agent_permissions(&topology.settings, CLUSTER));
    let commands = InstanceCommands::new(&topology, 100_000);

    let address_file = tempfile::NamedTempFile::new()?;
    let _sim = Command::new(options.bin_dir.join("k8s-sim"))
        .args(["--ready-delay-ms", "0", "--address-file"])
        .arg(address_file.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let kube = loop {
        let text = std::fs::read_to_string(address_file.path()).unwrap_or_default();
        if !text.is_empty() {
            break text;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "the simulator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut agent = start_agent(&options, &server, &identity.seed_file, &kube).await?;
    let http = reqwest::Client::new();
    quiet(&http, &agent.metrics).await?;
    let agent_pid = agent.process.id().ok_or_else(|| anyhow::anyhow!("the agent exited"))?;
    let idle_kib = rss_kib(agent_pid)?;

    // Ready as its agent reports it.
    let mut observed = nats.subscribe(streams::instances::observed_cluster_filter(CLUSTER)).await?;
    let ready = tokio::spawn(async move {
        let mut ready = HashSet::new();
        while let Some(message) = observed.next().await {
            if let Ok(ObservedMessage {
                event: domain::observed::ObservedEvent::InstanceObserved(state), ..
            }) = ObservedMessage::from_slice(&message.payload)
                && state.phase == domain::observed::ObservedPhase::Ready
            {
                ready.insert(state.instance_id);
                if ready.len() == options.instances {
                    break;
                }
            }
        }
        ready.len()
    });
    let provisioning = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    for i in 0..options.instances {
        let (service, version, _) = crate::bench_agents::SERVICES[i % crate::bench_agents::SERVICES.len()];
        let id = Uuid::now_v7();
        let project = format!("p{}", i % 50);
        let command = InstanceCommand::Provision(ProvisionInstance::new(
            id,
            &project,
            format!("db-{i}"),
            service,
            version,
            "starter",
            CLUSTER,
        ));
        commands
            .execute(
                &project,
                id,
                command,
                None,
                CommandMetadata::new(domain::OperationKind::Provision, "bench"),
            )
            .await?;
        let due = provisioning + interval * (i as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    let ready = tokio::time::timeout(Duration::from_secs(600), ready).await??;
    anyhow::ensure!(
        ready == options.instances,
        "only {ready} of {} instances became ready",
        options.instances
    );
    let all_ready = provisioning.elapsed();
    quiet(&http, &agent.metrics).await?;
    let loaded_kib = rss_kib(agent_pid)?;

    // Restart in steady state.
    agent.process.start_kill()?;
    agent.process.wait().await?;
    let restarted = Instant::now();
    let agent = start_agent(&options, &server, &identity.seed_file, &kube).await?;
    loop {
        if metric(&http, &agent.metrics, "cp_agent_reconciles").await? >= options.instances as u64 {
            break;
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(300),
            "the restarted agent did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = restarted.elapsed();
    quiet(&http, &agent.metrics).await?;
    // The CRD is installed at every start here (`--install-crd`); production installs it from deploy/.
    let writes = metric(&http, &agent.metrics, "cp_agent_kube_writes").await?.saturating_sub(1);
    let restarted_kib = rss_kib(agent.process.id().ok_or_else(|| anyhow::anyhow!("the agent exited"))?)?;

    let per_instance = |kib: u64| (kib.saturating_sub(idle_kib)) as f64 / options.instances as f64;
    println!(
        "agent as a process, {} instances on one simulated cluster (zero ready delay)",
        options.instances
    );
    println!(
        "  all ready {:.1} s after the first provision ({:.0}/s)",
        all_ready.as_secs_f64(),
        options.instances as f64 / all_ready.as_secs_f64()
    );
    println!(
        "  agent resident memory: idle {idle_kib} KiB, with the instances {loaded_kib} KiB: {:.1} KiB per instance",
        per_instance(loaded_kib)
    );
    println!(
        "  restart (SIGKILL) in steady state: every instance reconciled again after {:.2} s",
        caught_up.as_secs_f64()
    );
    println!("  Kubernetes writes caused by the restart: {writes} (the CRD install excepted)");
    println!(
        "  restarted agent resident memory: {restarted_kib} KiB: {:.1} KiB per instance",
        per_instance(restarted_kib)
    );
    Ok(())
}

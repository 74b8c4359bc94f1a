//! An agent as deployed, measured from outside: the `cluster-agent` and `k8s-sim` release binaries as
//! processes of their own, so the agent's resident memory is its own. Provisions `--instances` through
//! the event store, waits until its agent reports each ready, then prints the agent's resident memory
//! per instance, and restarts it with SIGKILL: time until it has reconciled every instance again, and the
//! Kubernetes writes the restart caused (the goal is none: nothing changed). `bench-scale` measures the
//! same at a hundred clusters; this one isolates a single agent.

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

use crate::process::{counter, free_port, quiet, rss_kib, serving, simulator_addresses};

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
    serving(&reqwest::Client::new(), &metrics, "the agent").await?;
    Ok(Agent { process, metrics })
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await?;
    cluster_feed::apply(&topology.jetstream, &topology.settings, CLUSTER).await?;
    let identity =
        server.add_agent_account(&streams::accounts::agent_account(&topology.settings, CLUSTER).to_value());
    let commands = InstanceCommands::new(&topology, 100_000);

    let address_file = tempfile::NamedTempFile::new()?;
    let _sim = Command::new(options.bin_dir.join("k8s-sim"))
        .args(["--ready-delay-ms", "0", "--address-file"])
        .arg(address_file.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let kube = simulator_addresses(address_file.path()).await?.remove(0);
    let mut agent = start_agent(&options, &server, &identity.seed_file, &kube).await?;
    let http = reqwest::Client::new();
    quiet(&http, std::slice::from_ref(&agent.metrics)).await?;
    let agent_pid = agent.process.id().ok_or_else(|| anyhow::anyhow!("the agent exited"))?;
    let idle_kib = rss_kib(agent_pid)?;

    // Ready as its agent reports it.
    // Its facts, as they arrive in its intake (`streams::intake`).
    let mut observed = nats.subscribe(streams::intake::cluster_filter(CLUSTER)).await?;
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
    let idle_cpu = crate::measure::cpu_seconds(Some(agent_pid));
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
    quiet(&http, std::slice::from_ref(&agent.metrics)).await?;
    let loaded_kib = rss_kib(agent_pid)?;
    let provisioning_cpu = crate::measure::cpu_seconds(Some(agent_pid)) - idle_cpu;
    // Every write from the start to all healthy (namespaces, egress policies, ManagedInstances, their
    // finalizers, objects, Secrets, statuses), the CRD install excepted.
    let provisioning_writes = counter(&http, &agent.metrics, "cp_agent_kube_writes").await?.saturating_sub(1);

    // Restart in steady state.
    agent.process.start_kill()?;
    agent.process.wait().await?;
    let restarted = Instant::now();
    let agent = start_agent(&options, &server, &identity.seed_file, &kube).await?;
    loop {
        if counter(&http, &agent.metrics, "cp_agent_reconciles").await? >= options.instances as u64 {
            break;
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(300),
            "the restarted agent did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = restarted.elapsed();
    // The restarted agent's CPU until it caught up: its start, the caches' LISTs and one reconcile of every
    // instance (what the periodic resync costs, less the LISTs).
    let restart_cpu = crate::measure::cpu_seconds(agent.process.id());
    quiet(&http, std::slice::from_ref(&agent.metrics)).await?;
    // The CRD is installed at every start here (`--install-crd`); production installs it from deploy/.
    let writes = counter(&http, &agent.metrics, "cp_agent_kube_writes").await?.saturating_sub(1);
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
        "  Kubernetes writes until all ready: {provisioning_writes}, {:.2} per instance",
        provisioning_writes as f64 / options.instances as f64
    );
    println!(
        "  agent CPU until all ready: {:.2} s, {:.0} µs per instance",
        provisioning_cpu,
        provisioning_cpu * 1e6 / options.instances as f64
    );
    println!(
        "  restart (SIGKILL) in steady state: every instance reconciled again after {:.2} s",
        caught_up.as_secs_f64()
    );
    println!(
        "  restarted agent CPU until caught up: {:.2} s, {:.0} µs per instance",
        restart_cpu,
        restart_cpu * 1e6 / options.instances as f64
    );
    println!("  Kubernetes writes caused by the restart: {writes} (the CRD install excepted)");
    println!(
        "  restarted agent resident memory: {restarted_kib} KiB: {:.1} KiB per instance",
        per_instance(restarted_kib)
    );
    Ok(())
}

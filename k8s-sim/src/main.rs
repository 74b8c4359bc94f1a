//! `k8s-sim`: simulated Kubernetes clusters, one per port (one by default; `--clusters` serves more from
//! one process, which is how the scale benchmark gets a hundred clusters onto two cores).

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use k8s_sim::{Simulator, SimulatorOptions};

/// Kubernetes API simulator.
#[derive(Debug, Parser)]
#[command(version)]
struct Options {
    /// address to serve on (port 0 picks a free one)
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// delay before simulated workloads become ready, in milliseconds
    #[arg(long, env = "SIM_READY_DELAY_MS", default_value_t = 200)]
    ready_delay_ms: u64,
    /// write the bound address to this file (for scripts), one line per cluster
    #[arg(long)]
    address_file: Option<std::path::PathBuf>,
    /// past changes per cluster a watch can resume from, and changes buffered for watchers (each keeps
    /// its object in memory)
    #[arg(long, default_value_t = k8s_sim::store::HISTORY)]
    history: usize,
    /// how many clusters to simulate, each on a port of its own (the first on `--listen`, the others on
    /// free ports) with its own state
    #[arg(long, default_value_t = 1)]
    clusters: usize,
    /// give Services of type LoadBalancer an address from this IPv4 block, as a cloud's load-balancer
    /// controller would (e.g. 198.51.100.0/24, a documentation range: nothing answers there)
    #[arg(long, value_parser = k8s_sim::load_balancer::parse_pool)]
    load_balancer_pool: Option<ipnet::Ipv4Net>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let options = Options::parse();
    let mut simulators = Vec::new();
    let mut addresses = Vec::new();
    for n in 0..options.clusters.max(1) {
        let sim = Simulator::new(SimulatorOptions {
            ready_delay: Duration::from_millis(options.ready_delay_ms),
            history: options.history,
            change_buffer: options.history.max(4096),
            load_balancer_pool: options.load_balancer_pool,
            ..SimulatorOptions::default()
        });
        let listen = if n == 0 { options.listen } else { SocketAddr::new(options.listen.ip(), 0) };
        let address = sim.serve(listen).await?;
        println!("k8s-sim listening on http://{address}");
        addresses.push(format!("http://{address}"));
        simulators.push(sim);
    }
    if let Some(file) = options.address_file {
        // Written whole and renamed, so a reader never sees a part of the list.
        let partial = file.with_extension("partial");
        std::fs::write(&partial, addresses.join("\n"))?;
        std::fs::rename(partial, file)?;
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}

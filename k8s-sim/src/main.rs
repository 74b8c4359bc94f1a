//! `k8s-sim`: one simulated Kubernetes cluster per process.

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
    /// write the bound address to this file (for scripts)
    #[arg(long)]
    address_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let options = Options::parse();
    let sim = Simulator::new(SimulatorOptions {
        ready_delay: Duration::from_millis(options.ready_delay_ms),
        ..SimulatorOptions::default()
    });
    let address = sim.serve(options.listen).await?;
    println!("k8s-sim listening on http://{address}");
    if let Some(file) = options.address_file {
        std::fs::write(file, format!("http://{address}"))?;
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}

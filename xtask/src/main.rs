//! Project tooling. `cargo run --release -p xtask -- bench` runs the benchmarks: figures, each beside a
//! baseline (raw JetStream publish with an expected-sequence check) measured in the same run, on a fresh
//! nats-server per durability setting. Medians of several runs; the machine is small and noisy.

mod api_client;
mod bench;
mod bench_agent_process;
mod bench_agents;
mod bench_intake;
mod bench_reads;
mod bench_scale;
mod measure;
mod process;

use clap::{Parser, Subcommand};

// glibc malloc showed up as the largest cost in profiles of the write path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks of the write path.
    Bench(bench::Options),
    /// A short form of the write-path benchmark, its ratios to raw beside recorded floors.
    BenchCheck(bench::check::CheckOptions),
    /// Benchmark of the cluster agents: command acknowledged to objects applied.
    BenchAgents(bench_agents::Options),
    /// The intake gate: how fast one cluster's facts reach the event stream, beside the configuration it
    /// replaced.
    BenchIntake(bench_intake::Options),
    /// The agent as a process: memory per instance, and what a restart in steady state costs.
    BenchAgentProcess(bench_agent_process::Options),
    /// Read-modify-write through the HTTP API (GET, then PATCH with its ETag) and what a GET costs.
    BenchReads(bench_reads::Options),
    /// Scale: 100 simulated clusters, 100,000 instances through the HTTP API, every part a process.
    BenchScale(bench_scale::Options),
    /// The scale benchmark's read load, run by it as a process of its own.
    ReadLoad(bench_scale::reads::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Bench(options) => runtime.block_on(bench::run(options)),
        Command::BenchCheck(options) => runtime.block_on(bench::check::run(options)),
        Command::BenchAgents(options) => runtime.block_on(bench_agents::run(options)),
        Command::BenchIntake(options) => runtime.block_on(bench_intake::run(options)),
        Command::BenchReads(options) => runtime.block_on(bench_reads::run(options)),
        Command::BenchAgentProcess(options) => runtime.block_on(bench_agent_process::run(options)),
        Command::BenchScale(options) => runtime.block_on(bench_scale::run(options)),
        Command::ReadLoad(options) => runtime.block_on(bench_scale::reads::run(options)),
    }
}

//! `agent-dry-run`: renders a cluster's desired history with this build's renderer and prints, per
//! instance, the objects a rollout of this agent would change (`cluster_agent::dry_run`). Reads the
//! event stream only; needs NATS rights to read it (an operator's, not an agent's). Exits 1 when a
//! rollout would change anything.

use std::time::Duration;

use clap::Parser;
use cluster_agent::{dry_run, render};

#[derive(Debug, Parser)]
#[command(version)]
struct Options {
    /// the cluster whose history to render
    #[arg(long, env = "CP_CLUSTER")]
    cluster: String,
    #[command(flatten)]
    nats: streams::connection::NatsArgs,
    /// the backup store endpoint the cluster's agent is configured with (it shapes PostgreSQL's objects)
    #[arg(long, env = "CP_BACKUP_STORE_ENDPOINT", requires = "backup_store_bucket")]
    backup_store_endpoint: Option<String>,
    /// the backup store bucket the cluster's agent is configured with
    #[arg(long, env = "CP_BACKUP_STORE_BUCKET")]
    backup_store_bucket: Option<String>,
    /// JSON instead of text
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let connect = async_nats::ConnectOptions::new()
        .name("agent-dry-run")
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)));
    let nats = options.nats.connect(connect).await?;
    let jetstream = async_nats::jetstream::new(nats);
    let events = jetstream.get_stream(&streams::Settings::default().events_stream).await?;
    let range = streams::history::HistoryRange { after: 0, until: None, limit: usize::MAX };
    let messages = streams::history::read_cluster_history(&events, &options.cluster, range)
        .await
        .map_err(|e| anyhow::anyhow!("reading cluster {}'s history: {e}", options.cluster))?;
    // Rendering reads the store's endpoint and bucket; keys live in Secrets the objects only name.
    let store = options
        .backup_store_endpoint
        .zip(options.backup_store_bucket)
        .map(|(endpoint, bucket)| render::backup::StoreTarget { endpoint, bucket });
    let report = dry_run::compare(&messages, store.as_ref(), render::render);
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", dry_run::render_text(&report));
    }
    if !report.differences.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

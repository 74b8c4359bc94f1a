//! The agent's heartbeat: every [`crate::AgentConfig::heartbeat`] it says it is alive, with its version,
//! how far behind its feed it is and when it last finished a reconcile (`streams::liveness`). The
//! control plane marks the cluster unreachable when the beats stop, and its instances `unknown`.

use std::sync::Arc;

use async_nats::jetstream;
use streams::{cluster_feed, liveness::Heartbeat};

use crate::AgentConfig;

/// Which replica this is: its pod's name (Kubernetes sets `HOSTNAME` to it), else its process id.
fn agent_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()))
}

/// How many messages of its feed are not yet delivered to this agent; `None` when that cannot be asked.
async fn lag(js: &jetstream::Context, config: &AgentConfig) -> Option<u64> {
    let stream =
        js.get_stream_no_info(cluster_feed::desired_stream_name(&config.settings, &config.cluster)).await;
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.ok()?.get_consumer(&cluster_feed::agent_consumer_name(&config.cluster)).await.ok()?;
    Some(consumer.info().await.ok()?.num_pending)
}

/// Beats until the task is dropped; a beat that cannot be published is logged and the next one tried.
pub(crate) async fn run(config: Arc<AgentConfig>) -> anyhow::Result<()> {
    let js = streams::accounts::agent_jetstream(config.nats.clone());
    let agent = agent_name();
    let mut reconciled = config.metrics.reconciled.subscribe();
    let mut last_reconcile = None;
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let beat = Heartbeat {
                    agent: agent.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    lag: lag(&js, &config).await.unwrap_or_default(),
                    last_reconcile,
                };
                if let Err(error) = beat.publish(&js, &config.cluster).await {
                    tracing::warn!(%error, "heartbeat not delivered");
                }
            }
            changed = reconciled.changed() => {
                if changed.is_err() {
                    // The metrics were dropped: nothing more to report about reconciles.
                    std::future::pending::<()>().await;
                }
                last_reconcile = Some(chrono::Utc::now());
            }
        }
    }
}

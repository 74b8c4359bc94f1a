//! The liveness watch: marks a cluster whose agent has been silent longer than the configured silence
//! `unreachable` (`streams::liveness`), so the API shows its instances `unknown` with the reason and the
//! time of the last heartbeat. The intake gate marks it reachable again at the next heartbeat; nothing
//! else changes: operations on it stay in progress, desired state stays as it is.

use std::time::Duration;

use streams::liveness::LivenessBucket;

/// Default silence after which a cluster counts as unreachable: six missed heartbeats of an agent beating
/// every ten seconds.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(60);

/// Checks every cluster's last heartbeat against `silence`, several times per silence, for ever.
pub async fn watch(bucket: LivenessBucket, silence: Duration) {
    let silence_delta = chrono::TimeDelta::from_std(silence).unwrap_or(chrono::TimeDelta::MAX);
    let period = (silence / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match bucket.mark_silent(silence_delta, chrono::Utc::now()).await {
            Ok(marked) => {
                for cluster in marked {
                    tracing::warn!(%cluster, ?silence, "no heartbeat from the cluster's agent: unreachable");
                }
            }
            Err(error) => tracing::warn!(%error, "checking the clusters' liveness failed"),
        }
        tokio::time::sleep(period).await;
    }
}

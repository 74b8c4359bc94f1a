//! What one cluster's agent reads, and the only rights its NATS identity holds.
//!
//! Each registered cluster gets a stream of its own, `<events>_DESIRED_<cluster>`, sourced by the server
//! from the event stream's `cp.evt.<cluster>.>` and keeping the newest message of each instance subject
//! (every message carries the instance's snapshot, so the newest is all an agent needs), and one durable
//! consumer on it. The control plane creates both when it registers the cluster; the agent only reads
//! through the consumer. At start the agent resets the consumer to the stream's first message
//! (`$JS.API.CONSUMER.RESET`, nats-server 2.14+), which replays the newest state of every instance of
//! its cluster, and then keeps following it.
//!
//! Why not consumers the agent makes itself: a consumer's creator chooses its `deliver_subject`, and the
//! server publishes deliveries there with the account's rights (nats-server checks it for wildcards and
//! cycles only, `server/consumer.go` `checkConsumerCfg`), so an agent allowed to create consumers could
//! make the server write its events into any subject of the account, a KV bucket or a JetStream API
//! subject among them. A stream of its own also keeps direct gets, which name subjects in the request
//! body where permissions cannot see them, out of the agent's reach.
//!
//! Why `persist_mode: async` on one replica: the feed is derived data. Under `sync_interval: always`
//! every sourced message was otherwise fsynced alone, outside the group commit's batches, which cost
//! the write path ~40% of its throughput (BENCHMARKS.md, issue 31). What an async stream can lose in a
//! crash is its unflushed tail; nats-server then sources again from the last source sequence the stream
//! still holds (`server/stream.go` `startingSequenceForSources`), and the event stream it sources from
//! is fsynced, so nothing acknowledged is lost (`tests/tests/system/faults.rs` kills nats-server and checks).
//! Replicated streams may not be async (`server/stream.go` `checkStreamCfg`: "async persist mode is not
//! supported on replicated streams") and need not be: their Raft log already relaxes `SyncAlways`
//! (`server/stream.go`, `fsCfg.AsyncFlush = !fsCfg.SyncAlways && config.Replicas > 1`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde_json::{Value, json};

use crate::{Settings, TopologyError, instances::cluster_filter};

/// Name of `cluster`'s stream: the newest message of each of its instance subjects.
pub fn desired_stream_name(settings: &Settings, cluster: &str) -> String {
    format!("{}_DESIRED_{cluster}", settings.events_stream)
}

/// Name of the durable consumer `cluster`'s agent reads its stream through.
pub fn agent_consumer_name(cluster: &str) -> String {
    format!("cp-agent-{cluster}")
}

/// Subjects the agent's acknowledgements of its consumer's messages are published on.
pub fn agent_ack_filter(settings: &Settings, cluster: &str) -> String {
    format!("$JS.ACK.{}.{}.>", desired_stream_name(settings, cluster), agent_consumer_name(cluster))
}

/// Prefix of the agent's reply subjects. Agents may subscribe to their own prefix only: replies to
/// other clients (pull deliveries among them) carry other clusters' events.
pub fn agent_inbox_prefix(cluster: &str) -> String {
    format!("_INBOX.cp-agent-{cluster}")
}

/// Configuration of `cluster`'s stream.
pub fn desired_stream_config(settings: &Settings, cluster: &str) -> stream::Config {
    stream::Config {
        name: desired_stream_name(settings, cluster),
        description: Some(format!("Newest desired state of each instance on cluster {cluster}")),
        // No subjects of its own: it only sources, so a publish is stored once, in the event stream.
        subjects: vec![],
        sources: Some(vec![stream::Source {
            name: settings.events_stream.clone(),
            filter_subject: Some(cluster_filter(cluster)),
            ..Default::default()
        }]),
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        max_message_size: settings.max_message_bytes,
        persist_mode: (settings.replicas == 1).then_some(stream::PersistenceMode::Async),
        ..Default::default()
    }
}

/// Whether `existing` was made with another persist mode than `desired`: nats-server refuses to change
/// it on an existing stream ("stream configuration update can not change persist mode",
/// `server/stream.go`), so only [`migrate`] can, by making the stream again.
fn persist_mode_differs(existing: &stream::Config, desired: &stream::Config) -> bool {
    let mode = |config: &stream::Config| config.persist_mode.unwrap_or(stream::PersistenceMode::Default);
    mode(existing) != mode(desired)
}

/// The durable consumer of `cluster`'s agent: every message of its stream, acknowledged one by one once
/// mirrored into the cluster, redelivered after 30 s without an ack.
pub fn agent_consumer(cluster: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(agent_consumer_name(cluster)),
        description: Some(format!("cluster agent of {cluster}")),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// Creates or updates `cluster`'s stream and its agent's consumer, and its intake ([`crate::intake`]). Safe to run at every start and every
/// registration, with the control plane's identity, which may not delete streams: a stream made with
/// another persist mode keeps it (the update would be refused) until [`migrate`] makes it again.
pub async fn apply(
    jetstream: &jetstream::Context,
    settings: &Settings,
    cluster: &str,
) -> Result<(), TopologyError> {
    let name = desired_stream_name(settings, cluster);
    let failed = |source: async_nats::Error| TopologyError::Stream { name: name.clone(), source };
    let mut config = desired_stream_config(settings, cluster);
    if let Ok(mut existing) = jetstream.get_stream(&name).await
        && let Ok(info) = existing.info().await
        && persist_mode_differs(&info.config, &config)
    {
        tracing::warn!(stream = %name, "the feed keeps its persist mode until `cp-api --migrate` makes it again");
        config.persist_mode = info.config.persist_mode;
    }
    jetstream.create_or_update_stream(config).await.map_err(|e| failed(e.into()))?;
    let stream = jetstream.get_stream(&name).await.map_err(|e| failed(e.into()))?;
    stream.create_consumer(agent_consumer(cluster)).await.map_err(|e| failed(e.into()))?;
    // Agents before this module followed a durable of the same name on the event stream; nothing reads
    // it any more, and left alone it would hold every message it ever delivered.
    if let Ok(events) = jetstream.get_stream(&settings.events_stream).await
        && events.consumer_info(agent_consumer_name(cluster)).await.is_ok()
    {
        let _ = events.delete_consumer(&agent_consumer_name(cluster)).await;
    }
    // And the agent's way in: where its facts wait for the intake gate.
    crate::intake::apply(jetstream, settings, cluster).await?;
    Ok(())
}

/// [`apply`], first deleting the stream if it was made with another persist mode (the admin's identity,
/// `cp-api --migrate`). The new stream sources every message of the cluster again and its consumer starts
/// from the first, so the agent, whose pulls fail while the consumer is missing, then reads the newest
/// state of every instance once more; its reconcile is idempotent. Returns whether the stream was made
/// again.
pub async fn migrate(
    jetstream: &jetstream::Context,
    settings: &Settings,
    cluster: &str,
) -> Result<bool, TopologyError> {
    let name = desired_stream_name(settings, cluster);
    let failed = |source: async_nats::Error| TopologyError::Stream { name: name.clone(), source };
    let remade = match jetstream.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| failed(e.into()))?;
            let differs = persist_mode_differs(&info.config, &desired_stream_config(settings, cluster));
            if differs {
                jetstream.delete_stream(&name).await.map_err(|e| failed(e.into()))?;
            }
            differs
        }
        Err(_) => false,
    };
    apply(jetstream, settings, cluster).await?;
    Ok(remade)
}

/// [`migrate`] for every registered cluster (the keys of the clusters bucket). Returns the clusters whose
/// feed was made again.
pub async fn migrate_registered(topology: &crate::Topology) -> Result<Vec<String>, TopologyError> {
    use futures::TryStreamExt as _;
    let bucket = topology.settings.clusters_bucket.clone();
    let failed = |source: async_nats::Error| TopologyError::Bucket { name: bucket.clone(), source };
    let keys = topology.clusters.keys().await.map_err(|e| failed(e.into()))?;
    let clusters: Vec<String> = keys.try_collect().await.map_err(|e| failed(e.into()))?;
    let mut remade = Vec::new();
    for cluster in clusters {
        if migrate(&topology.jetstream, &topology.settings, &cluster).await? {
            remade.push(cluster);
        }
    }
    Ok(remade)
}

/// Rewinds the agent's consumer to the first message of its stream, so it delivers the newest state of
/// every instance again. Returns the stream's last sequence at the reset: once a message at or after it
/// is delivered, the agent has seen every instance.
pub async fn rewind(
    jetstream: &jetstream::Context,
    settings: &Settings,
    cluster: &str,
) -> Result<u64, async_nats::Error> {
    let name = desired_stream_name(settings, cluster);
    let subject = format!("CONSUMER.RESET.{name}.{}", agent_consumer_name(cluster));
    let response: jetstream::response::Response<Value> =
        jetstream.request(subject, &json!({"seq": 1})).await?;
    match response {
        jetstream::response::Response::Err { error } => Err(Box::new(error)),
        jetstream::response::Response::Ok(_) => {
            let mut stream = jetstream.get_stream(&name).await?;
            Ok(stream.info().await?.state.last_sequence)
        }
    }
}

/// The nats-server `permissions` of `cluster`'s agent's user, inside its own account
/// ([`crate::accounts`], which is what isolates it; these keep even that account's subjects to what the
/// agent uses): read its own stream through its own consumer
/// (rewind included), publish its cluster's observed events, park what it cannot read on its own
/// dead-letter subject, receive replies on its own prefix, answer requests on its own `cp.rpc` subjects.
/// Nothing else: no other cluster's subjects, no `cp.evt`, no stream or consumer administration, no
/// direct gets, no buckets.
pub fn agent_permissions(settings: &Settings, cluster: &str) -> Value {
    let services = crate::accounts::agent_services(settings, cluster);
    json!({
        "publish": {"allow": services.into_iter().map(|service| service.local).collect::<Vec<_>>()},
        "subscribe": {"allow": [format!("{}.>", agent_inbox_prefix(cluster)), crate::credentials::requests_filter(cluster)]},
        // Answers to the control plane's requests (credentials) go to each request's own reply subject.
        "allow_responses": true,
    })
}

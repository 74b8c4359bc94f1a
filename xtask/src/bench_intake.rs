//! The intake gate's throughput: how fast one cluster's facts move from its intake onto the event stream.
//!
//! The gate's consumer has one fact outstanding at a time (`streams::intake::gate_consumer`), which keeps a
//! cluster's facts in order across a gate's failover. The baseline, measured in the same run on the same
//! servers, is the configuration it replaced: 256 outstanding (the order it could not keep is shown in
//! `tests/tests/three_nodes.rs`). The rate limit is lifted for both, so the figure is the gate's own.

use std::time::{Duration, Instant};

use async_nats::{HeaderMap, jetstream};
use streams::{Settings, headers};
use testkit::Sync;
use uuid::Uuid;

use crate::measure::{Servers, median};

/// Options of `xtask bench-intake`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// facts waiting in the intake when the gate starts
    #[arg(long, default_value_t = 2_000)]
    facts: u64,
    /// runs per configuration (medians are printed)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// replicas of every stream (1: one nats-server; 3: a three-node cluster)
    #[arg(long, default_value_t = 3)]
    replicas: usize,
}

const CLUSTER: &str = "bench-1";

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let mut one = Vec::new();
    let mut many = Vec::new();
    for run in 0..options.runs {
        // Alternated, so neither configuration always runs on a warmer machine.
        for outstanding in if run % 2 == 0 { [1, 256] } else { [256, 1] } {
            let rate = drain(&options, outstanding).await?;
            println!("bench-intake: run {run}, {outstanding} outstanding: {rate:.0} facts/s");
            if outstanding == 1 { one.push(rate) } else { many.push(rate) }
        }
    }
    let (one, many) = (median(one), median(many));
    println!(
        "bench-intake: {} facts, {} replica(s), sync always: one outstanding (now) {one:.0} facts/s, 256 \
         outstanding (baseline) {many:.0} facts/s, ratio {:.2}",
        options.facts,
        options.replicas,
        one / many
    );
    Ok(())
}

/// Fills a fresh intake with `options.facts` facts, starts the gate with `outstanding` facts allowed out
/// at once, and returns the facts per second until the event stream holds them all.
async fn drain(options: &Options, outstanding: i64) -> anyhow::Result<f64> {
    let servers = Servers::start(Sync::Always, options.replicas);
    let nats = servers.connect().await;
    let jetstream = jetstream::new(nats);
    let settings = Settings { replicas: options.replicas, ..Settings::default() };
    let topology = settings.apply_when_placed(&jetstream, Duration::from_secs(60)).await?;
    let clusters = streams::clusters::ClusterRegistry::open(&topology).await?;
    clusters.register(&domain::Cluster { name: CLUSTER.into(), region: "r".into() }).await?;
    let intake = jetstream.get_stream(streams::intake::stream_name(CLUSTER)).await?;
    let mut config = streams::intake::gate_consumer();
    config.max_ack_pending = outstanding;
    intake.create_consumer(config).await?;

    let instances: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let mut acks = Vec::new();
    for n in 0..options.facts {
        let id = instances[n as usize % instances.len()];
        let mut fact_headers = HeaderMap::new();
        fact_headers.insert(headers::EVENT_TYPE, "InstanceObserved");
        let subject = format!("{}.{CLUSTER}.acme.{id}", streams::intake::INTAKE_PREFIX);
        let payload = format!(r#"{{"bench":{n},"padding":"{}"}}"#, "x".repeat(300));
        acks.push(jetstream.publish_with_headers(subject, fact_headers, payload.into()).await?);
        if acks.len() >= 256 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    let mut events = topology.events.clone();
    let before = events.info().await?.state.messages;

    let started = Instant::now();
    let limits = projections::intake::IntakeLimits {
        per_second: std::num::NonZeroU32::new(1_000_000).expect("nonzero"),
        burst: std::num::NonZeroU32::new(1_000_000).expect("nonzero"),
    };
    let gate = tokio::spawn(projections::intake::run(
        jetstream.clone(),
        settings.clone(),
        clusters,
        limits,
        projections::intake::IntakeMetrics::default(),
    ));
    let deadline = started + Duration::from_secs(600);
    loop {
        let stored = events.info().await?.state.messages - before;
        if stored >= options.facts {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gate moved {stored} of {} facts in 600 s",
            options.facts
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the stream's count: no event says so
    }
    let elapsed = started.elapsed();
    gate.abort();
    drop(servers);
    Ok(options.facts as f64 / elapsed.as_secs_f64())
}

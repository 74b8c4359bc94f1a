//! Read-modify-write through the HTTP API, as every ordinary client does it (GET, then PATCH with the
//! returned ETag as `If-Match`), and what a GET of one instance costs now that it reads the instance's
//! desired state from the stream.
//!
//! Against a running stack (`--url`, e.g. `./dev up`'s), or by default an in-process one: a fresh
//! nats-server with `sync_interval: always`, the API (group commit) and the projector, over loopback TCP.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::future::join_all;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use streams::{CommitMode, Settings};
use testkit::{NatsServer, Sync};

use crate::measure::{cpu_seconds, drive, median, percentile};

/// Options of `bench-reads`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// base URL of a running API (e.g. http://127.0.0.1:8080); by default a stack in this process
    #[arg(long)]
    url: Option<String>,
    /// GET → PATCH rounds by one client
    #[arg(long, default_value_t = 1000)]
    rounds: usize,
    /// times 50 clients race one fresh If-Match
    #[arg(long, default_value_t = 10)]
    races: usize,
    /// runs per GET figure (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// seconds per GET run
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// The stack under test; the in-process one lives as long as this.
struct Stack {
    base: String,
    token: String,
    _server: Option<NatsServer>,
    server_pid: Option<u32>,
}

async fn in_process_stack() -> anyhow::Result<Stack> {
    let server = NatsServer::start_with(Sync::Always);
    let nats = server.connect().await;
    let settings = Settings { commit_mode: CommitMode::Grouped, ..Settings::default() };
    let topology = settings.apply(&async_nats::jetstream::new(nats.clone())).await?;
    let bucket = streams::read_models::ReadModelBucket::new(&topology);
    projections::Projector::new(topology.events, bucket, projections::ProjectorMetrics::default()).spawn();
    let (token, tokens) = crate::api_client::in_process_token()?;
    let state = api::AppState::start(nats, &settings).await?.with_tokens(tokens);
    state.clusters.register(&domain::Cluster { name: "c1".into(), region: "r".into() }).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api::app(state)).await });
    let server_pid = server.pid();
    Ok(Stack { base, token, _server: Some(server), server_pid })
}

/// Provisions an instance in `project`; returns its URL and the write's `Cp-Stream-Sequence`.
async fn provision(http: &Client, base: &str, project: &str, name: &str) -> anyhow::Result<(String, u64)> {
    let body = json!({"name": name, "service": "postgresql", "version": "16", "plan": "starter"});
    let reply = http.post(format!("{base}/v1/projects/{project}/instances")).json(&body).send().await?;
    anyhow::ensure!(reply.status() == StatusCode::ACCEPTED, "provision failed: {}", reply.text().await?);
    let sequence = reply
        .headers()
        .get("cp-stream-sequence")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .context("Cp-Stream-Sequence")?;
    let operation: Value = reply.json().await?;
    let id = operation["instance_id"].as_str().context("instance_id")?;
    Ok((format!("{base}/v1/projects/{project}/instances/{id}"), sequence))
}

async fn patch(
    http: &Client,
    url: &str,
    etag: Option<&str>,
    description: String,
) -> anyhow::Result<StatusCode> {
    let mut request = http
        .patch(url)
        .header("content-type", "application/merge-patch+json")
        .body(json!({ "description": description }).to_string());
    if let Some(etag) = etag {
        request = request.header("if-match", etag);
    }
    Ok(request.send().await?.status())
}

async fn get_etag(http: &Client, url: &str) -> anyhow::Result<String> {
    let reply = http.get(url).send().await?;
    anyhow::ensure!(reply.status() == StatusCode::OK, "GET answered {}", reply.status());
    Ok(reply.headers().get("etag").context("ETag")?.to_str()?.to_owned())
}

/// One client: GET, then PATCH with the ETag it returned, `rounds` times.
async fn read_modify_write(http: &Client, url: &str, rounds: usize) -> anyhow::Result<()> {
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let (mut gets, mut patches) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        let t = Instant::now();
        let etag = get_etag(http, url).await?;
        gets.push(t.elapsed());
        let t = Instant::now();
        let status = patch(http, url, Some(&etag), format!("round {round}")).await?;
        patches.push(t.elapsed());
        *statuses.entry(status.as_u16()).or_default() += 1;
    }
    gets.sort_unstable();
    patches.sort_unstable();
    println!("\n== GET → PATCH with the returned If-Match, one client, {rounds} rounds ==");
    println!("PATCH answers by status: {statuses:?}  (412s: {})", statuses.get(&412).copied().unwrap_or(0));
    println!(
        "GET p50 {:.2} ms, p99 {:.2} ms; PATCH p50 {:.2} ms, p99 {:.2} ms",
        percentile(&gets, 0.5),
        percentile(&gets, 0.99),
        percentile(&patches, 0.5),
        percentile(&patches, 0.99)
    );
    Ok(())
}

/// Fifty clients GET the same fresh ETag and PATCH with it at once, `races` times.
async fn races(http: &Client, url: &str, races: usize) -> anyhow::Result<()> {
    println!("\n== 50 concurrent PATCHes with one fresh If-Match, {races} times ==");
    let mut outcomes = BTreeMap::new();
    for race in 0..races {
        let etag = get_etag(http, url).await?;
        let replies =
            join_all((0..50).map(|i| patch(http, url, Some(&etag), format!("race {race} writer {i}"))))
                .await
                .into_iter()
                .collect::<anyhow::Result<Vec<_>>>()?;
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        for status in replies {
            *counts.entry(status.as_u16()).or_default() += 1;
        }
        *outcomes.entry(format!("{counts:?}")).or_insert(0) += 1;
    }
    for (outcome, times) in outcomes {
        println!("{times:>3} × {outcome}");
    }
    Ok(())
}

/// Per-run figures of one kind of read.
#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
}

/// GET of one instance (desired state from the stream) against the same instance through the list
/// filtered by name (read models only: what the GET cost before), alternating, at 1 and 64 clients.
async fn get_cost(http: &Client, stack: &Stack, project: &str, options: &Options) -> anyhow::Result<()> {
    let instances = 64;
    let mut urls = Vec::new();
    let mut last = 0;
    for i in 0..instances {
        let (url, sequence) = provision(http, &stack.base, project, &format!("get-{i}")).await?;
        urls.push(url);
        last = last.max(sequence);
    }
    let lists: Vec<String> = (0..instances)
        .map(|i| format!("{}/v1/projects/{project}/instances?name=get-{i}", stack.base))
        .collect();
    let (urls, lists) = (Arc::new(urls), Arc::new(lists));
    // The read models must show them all, so that each list answers one item: read-your-writes with the
    // last write's sequence (the API waits for the projector, bounded).
    for list in lists.iter() {
        let reply = http.get(list).header("cp-min-sequence", last.to_string()).send().await?;
        anyhow::ensure!(reply.status() == StatusCode::OK, "{list} answered {}", reply.status());
        let page: Value = reply.json().await?;
        anyhow::ensure!(page["items"].as_array().is_some_and(|items| items.len() == 1), "{list}: {page}");
    }
    println!(
        "\n== GET of one instance: from the stream (now) vs from the read models only (list by name) =="
    );
    println!(
        "{:<34} {:>3} {:>9} {:>7} {:>7} {:>9} {:>9}",
        "read", "in", "GETs/s", "p50 ms", "p99 ms", "CPU us", "vs list"
    );
    let duration = Duration::from_secs_f64(options.seconds);
    for clients in [1, 64] {
        let mut rows: [Samples; 2] = Default::default();
        let mut ratios = Vec::new();
        for _ in 0..options.runs {
            let mut rates = [0.0; 2];
            for (which, targets) in [&urls, &lists].into_iter().enumerate() {
                let (http, targets) = (http.clone(), targets.clone());
                let cpu = (cpu_seconds(None), cpu_seconds(stack.server_pid));
                let (rate, latencies) = drive(clients, duration, move |worker, _| {
                    let (http, target) = (http.clone(), targets[worker % instances].clone());
                    async move {
                        let reply = http.get(&target).send().await?;
                        anyhow::ensure!(reply.status() == StatusCode::OK, "GET answered {}", reply.status());
                        reply.bytes().await?;
                        Ok(())
                    }
                })
                .await?;
                let spent = cpu_seconds(None) - cpu.0 + (cpu_seconds(stack.server_pid) - cpu.1);
                let row = &mut rows[which];
                row.rate.push(rate);
                row.p50.push(percentile(&latencies, 0.5));
                row.p99.push(percentile(&latencies, 0.99));
                row.cpu_us.push(spent * 1e6 / latencies.len().max(1) as f64);
                rates[which] = rate;
            }
            ratios.push(rates[0] / rates[1]);
        }
        let ratio = median(ratios);
        for (which, Samples { rate, p50, p99, cpu_us: cpu }) in rows.into_iter().enumerate() {
            let name = ["GET /instances/{id} (stream + KV)", "GET /instances?name= (KV only)"][which];
            let shown_ratio = if which == 0 { format!("{ratio:.2}") } else { "1.00".into() };
            println!(
                "{name:<34} {clients:>3} {:>9.0} {:>7.2} {:>7.2} {:>9.0} {:>9}",
                median(rate),
                median(p50),
                median(p99),
                median(cpu),
                shown_ratio
            );
        }
    }
    println!(
        "CPU us: per GET, of this process (client{}) and nats-server{}; medians of {} alternating runs of {}s.",
        if stack.server_pid.is_some() { ", API and projector" } else { "" },
        if stack.server_pid.is_some() { "" } else { " (not measured: external stack)" },
        options.runs,
        options.seconds
    );
    Ok(())
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let stack = match &options.url {
        Some(url) => Stack {
            base: url.trim_end_matches('/').to_owned(),
            token: crate::api_client::running_stack_token()?,
            _server: None,
            server_pid: None,
        },
        None => in_process_stack().await?,
    };
    println!(
        "read-modify-write benchmark against {} ({})",
        stack.base,
        if options.url.is_some() { "a running stack" } else { "in-process: sync_interval always, grouped" }
    );
    let http = crate::api_client::client(&stack.token)?;
    let project = format!("bench-rmw-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
    let (url, _) = provision(&http, &stack.base, &project, "rmw").await?;
    read_modify_write(&http, &url, options.rounds).await?;
    races(&http, &url, options.races).await?;
    get_cost(&http, &stack, &project, &options).await?;
    Ok(())
}

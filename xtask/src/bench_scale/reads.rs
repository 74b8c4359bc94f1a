//! Reads at scale, from a client process of its own (`xtask read-load`), so the load generator's CPU is
//! not the measured API's: requests at a fixed rate (open loop: each is due at its time whether or not
//! the earlier ones have been answered, and its latency counts from when it was due, so a stall is not
//! hidden by the client waiting it out).

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::measure::percentile;

/// Options of the read load.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// the API's base URL (the token comes from `CP_API_TOKEN`)
    #[arg(long)]
    url: String,
    /// `project/id` lines: the instances to GET
    #[arg(long)]
    ids_file: PathBuf,
    /// requests per second
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// seconds per scenario
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// One scenario's figures, as the read load prints them (a JSON line each).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReadFigures {
    pub(crate) scenario: String,
    pub(crate) requests: usize,
    pub(crate) failed: usize,
    pub(crate) achieved_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// The URL of a scenario's `n`th request.
type UrlOf<'a> = Box<dyn Fn(usize) -> String + 'a>;

/// The read load's entry point (`xtask read-load`): three scenarios, one after the other.
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let token = crate::api_client::running_stack_token()?;
    let http = crate::api_client::client(&token)?;
    let ids: Vec<(String, String)> = std::fs::read_to_string(&options.ids_file)?
        .lines()
        .filter_map(|l| l.split_once('/').map(|(p, id)| (p.to_owned(), id.to_owned())))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no instances in {}", options.ids_file.display());
    let project = ids[0].0.clone();
    let base = options.url.trim_end_matches('/').to_owned();
    let list = format!("{base}/v1/projects/{project}/instances");
    let scenarios: [(&str, UrlOf<'_>); 3] = [
        (
            "GET one instance",
            Box::new(|n| {
                let (project, id) = &ids[n.wrapping_mul(7919) % ids.len()];
                format!("{base}/v1/projects/{project}/instances/{id}")
            }),
        ),
        ("list page (default size)", Box::new(|_| list.clone())),
        // No instance is in error once all are healthy: the filter reads the whole project for an empty page.
        ("list page, state=error (matches none)", Box::new(|_| format!("{list}?state=error"))),
    ];
    for (scenario, url) in scenarios {
        let figures =
            open_loop(&http, scenario, url, options.rate, Duration::from_secs(options.seconds)).await?;
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

async fn open_loop(
    http: &reqwest::Client,
    scenario: &str,
    url: UrlOf<'_>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<ReadFigures> {
    let count = (rate * duration.as_secs_f64()) as usize;
    let started = Instant::now();
    let mut requests = Vec::with_capacity(count);
    for n in 0..count {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let request = http.get(url(n)).send();
        requests.push(tokio::spawn(async move {
            let ok = match request.await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            (ok, due.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failed = 0;
    for request in requests {
        let (ok, latency) = request.await?;
        failed += usize::from(!ok);
        latencies.push(latency);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(ReadFigures {
        scenario: scenario.to_owned(),
        requests: count,
        failed,
        achieved_per_s: count as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
    })
}

/// Runs the read load as a process of its own against `url` and returns its figures.
pub(super) async fn measure(
    url: &str,
    token: &str,
    ids_file: &std::path::Path,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Vec<ReadFigures>> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["read-load", "--url", url, "--rate", &rate.to_string(), "--seconds", &seconds.to_string()])
        .arg("--ids-file")
        .arg(ids_file)
        .env("CP_API_TOKEN", token)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "the read load failed: {}", output.status);
    String::from_utf8(output.stdout)?.lines().map(|l| serde_json::from_str(l).map_err(Into::into)).collect()
}

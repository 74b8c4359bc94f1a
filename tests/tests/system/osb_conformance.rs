//! The broker against the Open Service Broker API's own document: schemathesis generates requests from the
//! v2.17 `openapi.yaml` (kept unchanged in `tests/osb/` with its licence) and sends them to the API served on
//! loopback, with every check it has (`--checks all`). Where the document and the spec disagree, the
//! document says the spec is the authority; `tests/osb/schemathesis.toml` names each such place and why.

use std::{path::PathBuf, process::Stdio, time::Duration};

use system_tests::TestApi;

/// The schemathesis CLI: `$CP_SCHEMATHESIS`, else `.tools/venv/bin/st` where `./dev` installs it.
fn schemathesis() -> PathBuf {
    std::env::var_os("CP_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/st"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_against_the_osb_2_17_document() {
    let api = TestApi::start().await;
    let mut agents = Vec::new();
    for cluster in ["eu-1", "eu-2"] {
        let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
        agents.push((sim, system_tests::cluster::agent(&api, cluster, address).await));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let report = tempfile::tempdir().expect("report directory");
    let examples = std::env::var("CP_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let run = tokio::process::Command::new(schemathesis())
        .env("SCHEMATHESIS_HOOKS", "osb_hooks")
        .env("PYTHONPATH", here.join("osb"))
        // The platform's password for the document's `basicAuth` scheme (see the config): schemathesis's
        // authentication checks still send requests without it, or with wrong ones.
        .env("CP_TEST_API_TOKEN", system_tests::ADMIN_TOKEN)
        .env(
            "CP_TEST_OSB_CATALOG",
            serde_json::to_string(&api::osb::catalog::catalog(api.state.catalog())).expect("json"),
        )
        .arg("--config-file")
        .arg(here.join("osb/schemathesis.toml"))
        .arg("run")
        .arg(here.join("osb/openapi.yaml"))
        .args(["--url", &base, "--checks", "all"])
        .args(["--max-examples", &examples, "--seed", "20261206", "--workers", "1"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(std::env::var("CP_SCHEMATHESIS_ARGS").unwrap_or_default().split_whitespace())
        .arg("--report-dir")
        .arg(report.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis finished within 15 minutes")
        .expect("schemathesis ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    // It reached the broker's real paths, not only its refusals: some provisions were accepted.
    assert!(
        api.state.read_models.read().all_instances().next().is_some(),
        "no request of schemathesis provisioned an instance: the run exercised refusals only"
    );
}

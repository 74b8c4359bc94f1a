//! The OpenAPI document tells the truth: schemathesis (PyPI, installed by `./dev`) generates requests from
//! `/openapi.json` (valid and invalid ones, from examples, from the schemas' boundaries, fuzzed, and in
//! stateful sequences) against the API served on loopback, and runs every check it has (`--checks all`):
//! no 5xx, every status and content type documented, every documented response schema met, schema-valid
//! requests accepted, invalid ones refused with a 4xx, headers as documented.

use std::{path::PathBuf, process::Stdio, time::Duration};

use axum::http::{Method, StatusCode};
use system_tests::TestApi;

/// The schemathesis CLI: `$CP_SCHEMATHESIS`, else `.tools/venv/bin/st` where `./dev` installs it.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("CP_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/st");
    assert!(
        installed.exists(),
        "schemathesis is not installed: run `./dev tools` (it installs it into .tools/venv), or set \
         CP_SCHEMATHESIS to its `st` command"
    );
    installed
}

/// Runs schemathesis with every check against `api` served on loopback, authenticated with `token`,
/// with `env` for the hooks; returns its output.
async fn schemathesis_run(api: &TestApi, token: &str, env: &[(&str, &str)]) -> std::process::Output {
    let st = schemathesis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let report = tempfile::tempdir().expect("report directory");
    let examples = std::env::var("CP_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(&st)
        // Hooks (a fresh Idempotency-Key per request) and per-operation settings; both say why.
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &here)
        // The token for the document's bearer scheme (`[auth.openapi.bearer]` in the config): the auth
        // checks still send requests without it.
        .env("CP_TEST_API_TOKEN", token)
        .envs(env.iter().copied())
        .arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .args(["run", &format!("{base}/openapi.json"), "--checks", "all"])
        // One worker: with two, hypothesis's `ast.parse` on concurrent threads hit CPython 3.11's
        // "AST constructor recursion depth mismatch" SystemError (CPython gh-106905) in one run of ten.
        .args(["--max-examples", &examples, "--seed", "20261130", "--workers", "1"])
        .args(["--request-timeout", "10", "--no-color"])
        // e.g. `--include-method DELETE --phases coverage` while chasing one failure
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
    println!("{}", String::from_utf8_lossy(&output.stdout));
    output
}

fn assert_no_failure(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "schemathesis found failures (exit {:?}):\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_with_every_check() {
    let api = TestApi::start().await;
    // Each cluster with its agent, so that what the API asks of clusters (credentials) is answered.
    let mut agents = Vec::new();
    for cluster in ["eu-1", "eu-2"] {
        let (sim, address) = system_tests::cluster::simulator(Duration::from_millis(20)).await;
        agents.push((sim, system_tests::cluster::agent(&api, cluster, address).await));
    }
    // The platform admin: every route is reachable.
    let output = schemathesis_run(&api, system_tests::ADMIN_TOKEN, &[]).await;
    assert_no_failure(&output);
}

/// Tenancy under schemathesis: project A's editor token, every request naming project B (and, on
/// instance routes, an instance B has), with every check plus one more: each such request is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_project_s_token_finds_nothing_of_it() {
    let api = TestApi::start().await;
    let body = serde_json::json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    let owner = format!("Bearer {}", system_tests::OTHER_EDITOR_TOKEN);
    let created = api
        .call(Method::POST, "/v1/projects/other/instances", Some(&body), &[("authorization", &owner)])
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let id = created.body["id"].as_str().expect("an id").to_owned();
    let path = format!("/v1/projects/other/instances/{id}");
    let before = api.get_after(&path, [&created]).await;
    let stored = api.stream_messages().await;

    let log = tempfile::NamedTempFile::new().expect("a log file");
    let log_path = log.path().to_str().expect("a UTF-8 path").to_owned();
    let env = [
        ("CP_TEST_FOREIGN_PROJECT", "other"),
        ("CP_TEST_FOREIGN_INSTANCE", id.as_str()),
        ("CP_TEST_TENANCY_LOG", log_path.as_str()),
    ];
    let output = schemathesis_run(&api, system_tests::ACME_EDITOR_TOKEN, &env).await;
    assert_no_failure(&output);
    // Every route of a project was tried with project A's token on project B, and answered 404.
    let tried: std::collections::BTreeSet<String> = std::fs::read_to_string(log.path())
        .expect("the check's log")
        .lines()
        .map(|line| line.rsplit_once(' ').map_or(line, |(operation, _)| operation).to_owned())
        .collect();
    let project_routes: std::collections::BTreeSet<String> = api::auth::ROUTES
        .iter()
        .filter(|(_, route, _)| route.contains("{project}"))
        .map(|(method, route, _)| format!("{method} {route}"))
        .collect();
    assert_eq!(tried, project_routes, "every project route was tried");

    assert_eq!(api.stream_messages().await, stored, "nothing another project's token sent was stored");
    let after = api.call(Method::GET, &path, None, &[("authorization", &owner)]).await;
    assert_eq!(after.header("etag"), before.header("etag"), "project B's instance is unchanged");
}

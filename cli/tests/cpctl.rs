//! `cpctl` as a user runs it: the built binary against a control plane served over HTTP on a real
//! nats-server, with a simulated cluster and its agent.

use std::{process::Output, time::Duration};

use k8s_sim::server::Faults;
use system_tests::{ACME_VIEWER_TOKEN, ADMIN_TOKEN, TestApi, cluster};
use tokio::process::Command;

struct Rig {
    _api: TestApi,
    url: String,
    sim: k8s_sim::Simulator,
    _agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn rig() -> Rig {
    let api = TestApi::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    let (sim, address) = cluster::simulator(Duration::from_millis(500)).await;
    let agent = cluster::agent(&api, "eu-1", address).await;
    Rig { _api: api, url, sim, _agent: agent, _server: server }
}

/// Runs `cpctl` with `args` as the platform admin in project acme, with no config file.
async fn cpctl(rig: &Rig, args: &[&str]) -> Output {
    cpctl_as(rig, ADMIN_TOKEN, args).await
}

async fn cpctl_as(rig: &Rig, token: &str, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_cpctl"))
        .args(["--api", &rig.url, "--project", "acme"])
        .args(args)
        .env("CPCTL_TOKEN", token)
        .env("CPCTL_CONFIG", "/nonexistent/cpctl.yaml")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("cpctl ends within 2 minutes")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json<T: serde::de::DeserializeOwned>(output: &Output) -> T {
    assert!(output.status.success(), "cpctl failed: {}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("-o json output parses ({e}): {}", stdout(output)))
}

const CREATE: [&str; 9] =
    ["instances", "create", "--service", "postgresql", "--version", "16", "--plan", "starter", "--wait"];

#[tokio::test(flavor = "multi_thread")]
async fn create_wait_returns_when_the_instance_is_healthy_and_json_parses() {
    let rig = rig().await;
    let output = cpctl(&rig, &[&CREATE[..], &["-o", "json", "--cluster", "eu-1", "orders"]].concat()).await;
    let operation: wire::Operation = json(&output);
    assert!(matches!(operation.state, wire::OperationStatus::Succeeded), "{operation:?}");
    assert!(stderr(&output).contains("provision in_progress"), "progress is shown: {}", stderr(&output));

    let instance: wire::Instance = json(&cpctl(&rig, &["instances", "get", "orders", "-o", "json"]).await);
    assert_eq!((instance.name.as_str(), instance.status.state), ("orders", wire::Health::Healthy));
    assert_eq!(instance.id, operation.instance_id);

    let list: Vec<wire::Instance> = json(&cpctl(&rig, &["instances", "list", "-o", "json"]).await);
    assert_eq!(list.len(), 1);
    let table = stdout(&cpctl(&rig, &["instances", "list"]).await);
    assert!(table.lines().next().is_some_and(|h| h.contains("NAME") && h.contains("STATE")), "{table}");
    assert!(table.contains("orders") && table.contains("healthy"), "{table}");
    let yaml = stdout(&cpctl(&rig, &["instances", "get", "orders", "-o", "yaml"]).await);
    assert!(yaml.contains("name: orders"), "{yaml}");

    // Configuration, the ACL, history and the audit chain, as a script would use them.
    let set = cpctl(&rig, &["config", "set", "orders", "max_connections=150", "--wait", "-o", "json"]).await;
    let _: wire::Operation = json(&set);
    let config: std::collections::BTreeMap<String, serde_json::Value> =
        json(&cpctl(&rig, &["config", "get", "orders", "-o", "json"]).await);
    assert_eq!(config.get("max_connections"), Some(&serde_json::json!(150)));
    // A restart parameter: held for the maintenance window unless it is open now; applied now on request.
    let shown: serde_json::Value = json(&cpctl(&rig, &["maintenance", "get", "orders", "-o", "json"]).await);
    assert_eq!(shown["maintenance_window"]["day"], "sunday", "the platform default: {shown}");
    let table = stdout(&cpctl(&rig, &["maintenance", "get", "orders"]).await);
    assert!(table.contains("sunday 02:00 for 240 min (UTC)"), "{table}");
    let applied: wire::Operation =
        json(&cpctl(&rig, &["maintenance", "apply", "orders", "--wait", "-o", "json"]).await);
    assert!(matches!(applied.state, wire::OperationStatus::Succeeded), "{applied:?}");
    let shown: serde_json::Value = json(&cpctl(&rig, &["maintenance", "get", "orders", "-o", "json"]).await);
    assert_eq!(shown["pending_maintenance"], serde_json::Value::Null, "nothing held after apply: {shown}");
    let _: wire::Operation =
        json(&cpctl(&rig, &["acl", "add", "orders", "10.0.0.0/8", "--wait", "-o", "json"]).await);
    let acl: wire::Acl = json(&cpctl(&rig, &["acl", "get", "orders", "-o", "json"]).await);
    assert_eq!(acl.entries.iter().map(|e| e.cidr.as_str()).collect::<Vec<_>>(), ["10.0.0.0/8"]);
    let _: wire::Operation =
        json(&cpctl(&rig, &["acl", "remove", "orders", "10.0.0.0/8", "-o", "json"]).await);
    // More than the API's largest page: the CLI pages.
    let history: Vec<wire::HistoryEntry> =
        json(&cpctl(&rig, &["history", "orders", "--limit", "1000", "-o", "json"]).await);
    assert!(
        history.iter().any(|e| e.event_type == "InstanceProvisioned" && e.actor.starts_with("admin@tests"))
    );
    let verified = cpctl(&rig, &["audit", "verify", "orders"]).await;
    assert!(verified.status.success() && stdout(&verified).contains("true"), "{}", stdout(&verified));
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_exits_non_zero_with_the_reason_when_the_instance_fails() {
    let rig = rig().await;
    rig.sim.set_faults(Faults { image_pull_failure: vec!["*".into()], ..Faults::default() });
    // A StatefulSet service, whose pods report the image pull failure themselves.
    let create = ["instances", "create", "--service", "mongodb", "--version", "7.0", "--plan", "starter"];
    let output = cpctl(&rig, &[&create[..], &["--wait", "--cluster", "eu-1", "broken"]].concat()).await;
    assert!(!output.status.success(), "a failed operation exits non-zero");
    let error = stderr(&output);
    assert!(error.contains("failed") && error.contains("ImagePull"), "the reason is named: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_field_and_rule_and_exit_non_zero() {
    let rig = rig().await;
    let output =
        cpctl(&rig, &["instances", "create", "x", "--service", "oracle", "--version", "1", "--plan", "p"])
            .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--service"), "{}", stderr(&output));

    let output = cpctl(
        &rig,
        &[
            "instances",
            "create",
            "Bad_Name",
            "--service",
            "postgresql",
            "--version",
            "16",
            "--plan",
            "starter",
        ],
    )
    .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("422") && stderr(&output).contains("/name"), "{}", stderr(&output));

    let output = cpctl_as(
        &rig,
        ACME_VIEWER_TOKEN,
        &["instances", "create", "viewer", "--service", "postgresql", "--version", "16", "--plan", "starter"],
    )
    .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));

    let output = cpctl(&rig, &["instances", "get", "nothing-here"]).await;
    assert!(stderr(&output).contains("no instance named \"nothing-here\""), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_names_the_api_and_project_and_completions_print() {
    let rig = rig().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "current: local\nprofiles:\n  local: {{api: \"{}\", project: acme, token_env: MY_TOKEN}}\n",
            rig.url
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cpctl"))
        .args(["instances", "list", "-o", "json"])
        .env("CPCTL_CONFIG", &path)
        .env("MY_TOKEN", ADMIN_TOKEN)
        .env_remove("CPCTL_TOKEN")
        .output()
        .await
        .unwrap();
    let list: Vec<wire::Instance> = json(&output);
    assert!(list.is_empty());
    let output = Command::new(env!("CARGO_BIN_EXE_cpctl"))
        .args(["--profile", "prod", "instances", "list"])
        .env("CPCTL_CONFIG", &path)
        .output()
        .await
        .unwrap();
    assert!(stderr(&output).contains("no profile \"prod\""), "{}", stderr(&output));

    let output =
        Command::new(env!("CARGO_BIN_EXE_cpctl")).args(["completions", "bash"]).output().await.unwrap();
    assert!(output.status.success() && stdout(&output).contains("_cpctl"), "bash completions print");
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_created_listed_read_rotated_and_deleted() {
    let rig = rig().await;
    let created = cpctl(&rig, &[&CREATE[..], &["-o", "json", "--cluster", "eu-1", "ledger"]].concat()).await;
    let _: wire::Operation = json(&created);
    let user = cpctl(
        &rig,
        &["users", "create", "ledger", "reporting", "--role", "readonly", "--wait", "-o", "json"],
    )
    .await;
    let operation: wire::Operation = json(&user);
    assert!(matches!(operation.state, wire::OperationStatus::Succeeded), "{operation:?}");
    let users: Vec<wire::User> = json(&cpctl(&rig, &["users", "list", "ledger", "-o", "json"]).await);
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].name.as_str(), users[0].role.as_str()), ("reporting", "readonly"));
    assert_eq!(users[0].state, wire::UserState::Applied);
    let table = stdout(&cpctl(&rig, &["users", "ls", "ledger"]).await);
    assert!(table.contains("reporting") && table.contains("applied"), "{table}");
    let credentials: wire::Credentials =
        json(&cpctl(&rig, &["users", "credentials", "ledger", "reporting", "-o", "json"]).await);
    assert_eq!(credentials.username, "reporting");
    let viewer = cpctl_as(&rig, ACME_VIEWER_TOKEN, &["users", "credentials", "ledger", "reporting"]).await;
    assert!(!viewer.status.success(), "a viewer may not read a user's credentials");
    let _: wire::Operation =
        json(&cpctl(&rig, &["users", "rotate", "ledger", "reporting", "--wait", "-o", "json"]).await);
    let rotated: wire::Credentials =
        json(&cpctl(&rig, &["users", "credentials", "ledger", "reporting", "-o", "json"]).await);
    assert_ne!(rotated.password, credentials.password, "a new password");
    let refused = cpctl(&rig, &["users", "create", "ledger", "postgres", "--role", "readonly"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("user_name_reserved"), "the rule is named: {}", stderr(&refused));
    let _: wire::Operation =
        json(&cpctl(&rig, &["users", "rm", "ledger", "reporting", "--wait", "-o", "json"]).await);
    let users: Vec<wire::User> = json(&cpctl(&rig, &["users", "list", "ledger", "-o", "json"]).await);
    assert!(users.is_empty());
}

#[tokio::test]
async fn the_fleet_is_listed_cordoned_drained_and_an_instance_s_move_asked_and_cancelled() {
    let rig = rig().await;
    let clusters: Vec<wire::ClusterStatus> = json(&cpctl(&rig, &["fleet", "clusters", "-o", "json"]).await);
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["eu-1", "eu-2"]);
    assert!(clusters.iter().all(|c| !c.cordoned));
    let cordoned: wire::ClusterStatus = json(&cpctl(&rig, &["fleet", "cordon", "eu-2", "-o", "json"]).await);
    assert!(cordoned.cordoned && cordoned.draining.is_none(), "{cordoned:?}");
    let refused = cpctl(&rig, &["fleet", "drain", "eu-2", "--parallel", "0"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("drain_parallel"), "the rule is named: {}", stderr(&refused));
    let drained: wire::ClusterStatus =
        json(&cpctl(&rig, &["fleet", "drain", "eu-2", "--parallel", "3", "-o", "json"]).await);
    assert_eq!((drained.cordoned, drained.draining), (true, Some(3)));
    let viewer = cpctl_as(&rig, ACME_VIEWER_TOKEN, &["fleet", "uncordon", "eu-2"]).await;
    assert!(!viewer.status.success(), "only a platform admin changes the fleet");
    let open: wire::ClusterStatus = json(&cpctl(&rig, &["fleet", "uncordon", "eu-2", "-o", "json"]).await);
    assert_eq!((open.cordoned, open.draining), (false, None));
    let table = stdout(&cpctl(&rig, &["fleet", "clusters"]).await);
    assert!(table.contains("eu-2") && table.contains("CORDONED"), "{table}");

    let created = cpctl(&rig, &[&CREATE[..], &["-o", "json", "--cluster", "eu-1", "ledger"]].concat()).await;
    let _: wire::Operation = json(&created);
    let moving: wire::Operation =
        json(&cpctl(&rig, &["fleet", "migrate", "ledger", "--to", "eu-2", "-o", "json"]).await);
    assert!(matches!(moving.operation_type, wire::OperationType::Migrate), "{moving:?}");
    let shown: wire::Instance = json(&cpctl(&rig, &["instances", "get", "ledger", "-o", "json"]).await);
    assert_eq!(shown.migration.as_ref().map(|m| m.to.as_str()), Some("eu-2"), "{shown:?}");
    let _: wire::Operation = json(&cpctl(&rig, &["fleet", "cancel-migration", "ledger", "-o", "json"]).await);
    let shown: wire::Instance = json(&cpctl(&rig, &["instances", "get", "ledger", "-o", "json"]).await);
    assert!(shown.migration.is_none() && shown.cluster == "eu-1", "{shown:?}");
}

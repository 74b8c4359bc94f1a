//! The PostgreSQL configuration verification Job's script (`render/pg_settings.rs`), rendered exactly as
//! the agent renders it and run under `sh` with the real `psql` against a real PostgreSQL (the machine's,
//! Debian 12's PostgreSQL 15): it passes when every wanted value is live, in whatever unit PostgreSQL
//! shows it, and fails when one is pending a restart, differs, or is no parameter at all.
//!
//! Only the connection differs from a cluster: `PGHOST` is the server's socket directory instead of
//! CloudNativePG's `<cluster>-rw` Service, and the wait is a few seconds instead of twenty minutes.

use std::{path::PathBuf, process::Command};

use serde_json::{Value, json};

use crate::fixture;

const PASSWORD: &str = "app-secret-1";

fn bin() -> PathBuf {
    kubeenv::barman::postgres_dir("15").expect("PostgreSQL 15's programs")
}

/// Runs `program` as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(program: &str, args: &[&str]) -> String {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin().join(program))
        .args(args)
        .output()
        .expect("runuser");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {args:?}: {text}");
    text
}

/// A running PostgreSQL 15 on a Unix socket, with CloudNativePG's application user and database
/// (`app`, password authentication); stopped on drop.
struct Postgres {
    dir: PathBuf,
}

impl Postgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("cp-pgconf-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.display().to_string();
        let status = Command::new("chown").args(["postgres:postgres", &path]).status().unwrap();
        assert!(status.success());
        let data = format!("{path}/data");
        as_postgres(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"],
        );
        // Local connections of `app` need its password, as CloudNativePG's `host all all all
        // scram-sha-256` does for the Job (v1.30.0 `pkg/postgres/configuration.go`).
        std::fs::write(
            format!("{data}/pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )
        .unwrap();
        let conf = format!("listen_addresses = ''\nunix_socket_directories = '{path}'\nport = 5432\n");
        let mut text = std::fs::read_to_string(format!("{data}/postgresql.conf")).unwrap();
        text.push_str(&conf);
        std::fs::write(format!("{data}/postgresql.conf"), text).unwrap();
        as_postgres("pg_ctl", &["-D", &data, "-l", &format!("{path}/log"), "-w", "-t", "60", "start"]);
        let server = Self { dir };
        server.sql(&format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"));
        server.sql("CREATE DATABASE app OWNER app");
        server
    }

    fn socket(&self) -> String {
        self.dir.display().to_string()
    }

    /// SQL as the superuser.
    fn sql(&self, sql: &str) -> String {
        as_postgres("psql", &["-h", &self.socket(), "-U", "postgres", "-d", "postgres", "-XAtc", sql])
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = format!("{}/data", self.socket());
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin().join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Job the agent renders for `config` (catalog names and values).
fn job(config: Value) -> Value {
    let mi = fixture::instance("postgresql", "15", config);
    let children = cluster_agent::render::render(&mi, None);
    let job = children
        .iter()
        .find(|c| cluster_agent::render::pg_settings::is_verification_job(c))
        .expect("a verification Job");
    job.object.clone()
}

/// Runs the Job's script against `server` with the Job's own environment (the Secret's values filled in
/// as the kubelet would), waiting at most `wait` seconds; whether it passed, and what it printed.
fn run(server: &Postgres, job: &Value, wait: u32) -> (bool, String) {
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> =
        container["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match (&var["value"], var["valueFrom"]["secretKeyRef"]["key"].as_str()) {
            (Value::String(v), _) => v.clone(),
            (_, Some("username")) | (_, Some("dbname")) => "app".into(),
            (_, Some("password")) => PASSWORD.into(),
            other => panic!("unexpected variable {var}: {other:?}"),
        };
        env.push((name, value));
    }
    let path = format!("{}:{}", bin().display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("sh")
        .args(["-c", command[2]])
        .env_clear()
        .env("PATH", path)
        .envs(env)
        .env("PGHOST", server.socket())
        .env("WAIT_SECONDS", wait.to_string())
        .output()
        .expect("sh");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_configuration_check_passes_once_the_values_are_live_and_fails_while_pending_a_restart_or_different() {
    let server = Postgres::start();
    // What CloudNativePG's instance manager does for a reload-only change: the file, then a reload. Set
    // in other units than the agent writes them.
    server.sql("ALTER SYSTEM SET work_mem = '8MB'");
    server.sql("ALTER SYSTEM SET log_min_duration_statement = '1s'");
    server.sql("ALTER SYSTEM SET track_io_timing = on");
    server.sql("SELECT pg_reload_conf()");
    let live =
        job(json!({"work_mem_kib": 8192, "log_min_duration_statement_ms": 1000, "track_io_timing": true,
        "wal_level": "replica", "max_connections": 100}));
    let (passed, output) = run(&server, &live, 30);
    assert!(passed, "every value is live: {output}");

    // Changed in the file, not yet reloaded: not live.
    server.sql("ALTER SYSTEM SET work_mem = '16MB'");
    let pending_reload = job(json!({"work_mem_kib": 16384}));
    let (passed, output) = run(&server, &pending_reload, 3);
    assert!(!passed, "a value not reloaded yet is not live: {output}");
    assert!(output.contains("work_mem: wanted 16384kB, live 8192 kB"), "{output}");
    server.sql("SELECT pg_reload_conf()");
    let (passed, output) = run(&server, &pending_reload, 30);
    assert!(passed, "reloaded, it is: {output}");

    // A parameter that needs a restart, reloaded: PostgreSQL reports it pending.
    server.sql("ALTER SYSTEM SET max_connections = 150");
    server.sql("SELECT pg_reload_conf()");
    let restart = job(json!({"max_connections": 150}));
    let (passed, output) = run(&server, &restart, 3);
    assert!(!passed, "a value pending a restart is not live: {output}");
    assert!(output.contains("max_connections: wanted 150, live 100 (pending restart)"), "{output}");

    // A value that is not the one asked for, and no parameter at all.
    let (passed, output) = run(&server, &job(json!({"work_mem_kib": 4096})), 3);
    assert!(!passed && output.contains("work_mem: wanted 4096kB, live 16384 kB"), "{output}");
    let (passed, output) = run(&server, &job(json!({"no_such_parameter": 1})), 3);
    assert!(!passed && output.contains("no_such_parameter: wanted 1, live (no such parameter)"), "{output}");

    // The password reaches psql from the environment only: a wrong one is refused.
    let mut wrong = live.clone();
    let env = wrong["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap();
    env.retain(|v| v["name"] != "PGPASSWORD");
    env.push(json!({"name": "PGPASSWORD", "value": "not-the-password"}));
    let (passed, output) = run(&server, &wrong, 3);
    assert!(!passed && output.contains("password authentication failed"), "{output}");
}

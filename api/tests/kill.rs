//! The API process killed with SIGKILL while it handles writes, then the client retrying with the same
//! `Idempotency-Key`, as clients are told to: every request is stored exactly once, and the retry answers
//! with the operation of the attempt that was stored. Half the attempts die exactly after JetStream stored
//! the command and before the client got its answer (the outcome the client cannot know; a fault point of
//! debug builds, `CP_FAULT_ABORT_AFTER_STORE`), the other half are SIGKILLed at arbitrary moments.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use projections::{Projector, ProjectorMetrics};
use serde_json::{Value, json};
use streams::{Settings, read_models::ReadModelBucket};
use testkit::NatsServer;

const TOKEN: &str = "cpat_kill_test_admin";
const ROUNDS: u64 = 30;
const WAIT: Duration = Duration::from_secs(30);

/// A child process killed when dropped, so a failing round leaves no `cp-api` behind; and word of when
/// it serves.
struct Api(Child, Option<tokio::sync::oneshot::Receiver<()>>);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `cp-api` process on `port`; with `die_after_store`, one that dies (SIGABRT, no cleanup) right after
/// storing a command and before answering it (a fault point of debug builds).
fn spawn_api(server: &NatsServer, port: u16, die_after_store: bool) -> Api {
    let tokens = json!([{"name": "kill", "sha256": api::auth::hash_token(TOKEN), "subject": "kill-test",
                         "platform_admin": true, "projects": {"*": "admin"}}]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_cp-api"));
    if die_after_store {
        command.env("CP_FAULT_ABORT_AFTER_STORE", "1");
    }
    command
        .env("CP_NATS_URL", server.url())
        .env("CP_LISTEN", format!("127.0.0.1:{port}"))
        .env("CP_CLUSTERS", "c1=r1")
        .env("CP_API_TOKENS", tokens.to_string())
        .env("RUST_LOG", "warn,cp_api=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(|mut child| {
            // cp-api logs "serving" once NATS, the topology and the read models are up and it listens; the
            // reader goes on draining the log so the process never blocks on it.
            let log = child.stdout.take().expect("piped stdout");
            let (serving, ready) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let mut serving = Some(serving);
                for line in BufReader::new(log).lines().map_while(Result::ok) {
                    if line.contains("serving") {
                        serving.take().map(|tx| tx.send(()));
                    }
                }
            });
            Api(child, Some(ready))
        })
        .expect("start cp-api")
}

/// A minimal HTTP/1.1 client (one request per connection), so that a killed server shows as a failed
/// request, not as a pooled connection's retry.
async fn send(port: u16, method: &str, path: &str, key: &str, body: &Value) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let json = text.split_once("\r\n\r\n").and_then(|(_, body)| serde_json::from_str(body).ok())?;
    Some((status, json))
}

/// Waits until `cp-api` says it serves.
async fn ready(api: &mut Api) {
    let serving = api.1.take().expect("waited for once");
    let said = tokio::time::timeout(WAIT, serving).await;
    assert!(matches!(said, Ok(Ok(()))), "cp-api did not start serving within {WAIT:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_to_a_killed_api_is_stored_once_and_its_retry_answers_it() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let topology = Settings::default().apply(&async_nats::jetstream::new(nats)).await.unwrap();
    // The projector runs beside the API, as in a deployment; retries read the first attempt's operation.
    Projector::new(topology.events.clone(), ReadModelBucket::new(&topology), ProjectorMetrics::default())
        .spawn();
    let mut events = topology.events.clone();
    let port = free_port();
    let mut lost_after_store = 0;
    for round in 0..ROUNDS {
        // Odd rounds: the process dies right after storing the command, before answering. Even rounds:
        // SIGKILL somewhere in the request's life, from before it is read to after it is answered.
        let dies_after_store = round % 2 == 1;
        let mut api = spawn_api(&server, port, dies_after_store);
        ready(&mut api).await;
        let key = format!("kill-round-{round}");
        let body = json!({"name": format!("db-{round}"), "service": "grafana", "version": "11.6", "plan": "starter"});
        let path = "/v1/projects/acme/instances";
        let before = events.info().await.unwrap().state.messages;
        let attempt =
            tokio::spawn(
                async move { send(port, "POST", path, &format!("kill-round-{round}"), &body).await },
            );
        if dies_after_store {
            // It dies by itself once it has stored the command.
            let _ = tokio::task::spawn_blocking(move || api.0.wait()).await;
        } else {
            tokio::time::sleep(Duration::from_micros(round * 300)).await;
            api.0.kill().unwrap();
            api.0.wait().unwrap();
        }
        let first = attempt.await.unwrap();
        let stored_meanwhile = events.info().await.unwrap().state.messages > before;
        if first.is_none() && stored_meanwhile {
            lost_after_store += 1;
        }

        let mut api = spawn_api(&server, port, false);
        ready(&mut api).await;
        let body = json!({"name": format!("db-{round}"), "service": "grafana", "version": "11.6", "plan": "starter"});
        let (status, operation) = send(port, "POST", path, &key, &body).await.expect("the retry is answered");
        assert_eq!(status, 202, "round {round}: {operation}");
        if let Some((first_status, first_operation)) = &first {
            assert_eq!(*first_status, 202, "round {round}: {first_operation}");
            assert_eq!(
                first_operation["id"], operation["id"],
                "round {round}: the retry answers the first operation"
            );
        }
        assert_eq!(
            events.info().await.unwrap().state.messages,
            round + 1,
            "round {round}: the request is stored exactly once"
        );
        let instance = operation["instance_id"].as_str().expect("an instance id");
        let stored =
            events.get_last_raw_message_by_subject(&format!("cp.evt.c1.acme.{instance}")).await.unwrap();
        let command_id = stored.headers.get(streams::headers::COMMAND_ID).map(|v| v.as_str().to_owned());
        assert_eq!(
            command_id.as_deref(),
            operation["id"].as_str(),
            "round {round}: the operation answered is the command stored"
        );
        drop(api);
    }
    assert_eq!(events.info().await.unwrap().state.messages, ROUNDS, "one message per request, nothing more");
    assert!(
        lost_after_store >= ROUNDS / 2,
        "only {lost_after_store} of {ROUNDS} attempts died between storing a command and answering it: the \
         fault point did not fire, so the test showed less than it claims"
    );
    eprintln!(
        "{lost_after_store} of {ROUNDS} attempts died after the command was stored and before its answer"
    );
}

/// Kubernetes stops a pod with SIGTERM: `cp-api` stops accepting connections, finishes what it serves
/// and exits 0 (not killed by the signal), so a rolling update loses no answered request.
#[tokio::test]
async fn sigterm_shuts_the_api_down_gracefully() {
    let server = NatsServer::start();
    let setup = server.connect().await;
    Settings::default().apply(&async_nats::jetstream::new(setup)).await.expect("topology");
    let port = free_port();
    let mut api = spawn_api(&server, port, false);
    ready(&mut api).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &api.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = api.0.try_wait().expect("wait for cp-api") {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "cp-api still running {WAIT:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "cp-api did not shut down gracefully on SIGTERM: {exit}");
}

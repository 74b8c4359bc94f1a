//! The shell scripts the agent's Jobs run, executed under `sh` with the real tools (curl, python3's
//! sqlite3) against fakes of the services whose rules come from the upstream handlers, so a missing
//! session, a wrong verb or a wrong password fails here as it would against the service.
//!
//! Rendered exactly as the agent renders them; the only change is the service's address (`base=`), which
//! names the in-cluster Service and here is the fake's loopback port.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::fixture;

const OLD: &str = "old-pass-1";
const NEW: &str = "new-pass-2";

/// The user and password of a request's Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.into(), p.into()))?;
    Some((user, password))
}

/// InfluxDB 2.7's rules for the routes the rotation uses (influxdata/influxdb v2.7.12):
/// - `http/platform_handler.go`: only a few routes are registered without authentication
///   (`RegisterNoAuthRoute`: `POST /api/v2/signin`, `/api/v2/setup`, health, …); every other request goes
///   through `http/authentication_middleware.go`, whose `ProbeAuthScheme` accepts a `Token` header or the
///   session cookie and nothing else: a Basic header alone is 401.
/// - `session/http_server.go`: `POST /api/v2/signin` with Basic credentials answers 204 and sets the
///   session cookie `influxdb-oss-session`.
/// - `tenant/http_server_user.go`, `handlePutUserPassword`: `PUT /api/v2/users/{id}/password` takes the
///   Basic credentials' password and `CompareAndSetPassword`s the body's `password` (401 when the old one
///   is wrong); `GET /api/v2/me` names the signed-in user.
#[derive(Default)]
struct Influx {
    password: Mutex<String>,
    sessions: Mutex<HashSet<String>>,
    refused: Mutex<Vec<String>>,
}

const INFLUX_USER_ID: &str = "0a1b2c3d4e5f6789";

impl Influx {
    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let cookies =
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        let sessions = self.sessions.lock().unwrap();
        cookies.iter().flat_map(|c| c.split(';')).any(|c| {
            c.trim().strip_prefix("influxdb-oss-session=").is_some_and(|token| sessions.contains(token))
        })
    }

    fn refuse(&self, why: &str) -> Response {
        self.refused.lock().unwrap().push(why.to_owned());
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "unauthorized", "message": why})))
            .into_response()
    }
}

fn influx_router(influx: Arc<Influx>) -> Router {
    Router::new()
        .route(
            "/api/v2/signin",
            post(|State(s): State<Arc<Influx>>, headers: HeaderMap| async move {
                match basic(&headers) {
                    Some((user, password)) if user == "admin" && password == *s.password.lock().unwrap() => {
                        let token = uuid::Uuid::new_v4().simple().to_string();
                        s.sessions.lock().unwrap().insert(token.clone());
                        let cookie = format!("influxdb-oss-session={token}; Path=/api/; HttpOnly");
                        (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
                    }
                    _ => s.refuse("signin: wrong credentials"),
                }
            }),
        )
        .route(
            "/api/v2/me",
            get(|State(s): State<Arc<Influx>>, headers: HeaderMap| async move {
                if !s.authenticated(&headers) {
                    return s.refuse("GET /api/v2/me without a session or token");
                }
                axum::Json(json!({"id": INFLUX_USER_ID, "name": "admin", "status": "active"})).into_response()
            }),
        )
        .route(
            "/api/v2/users/{id}/password",
            put(
                |State(s): State<Arc<Influx>>,
                 Path(id): Path<String>,
                 headers: HeaderMap,
                 body: axum::Json<Value>| async move {
                    if !s.authenticated(&headers) {
                        return s.refuse("PUT password without a session or token");
                    }
                    let Some((_, old)) = basic(&headers) else {
                        return s.refuse("PUT password without Basic credentials");
                    };
                    if id != INFLUX_USER_ID {
                        return (StatusCode::NOT_FOUND, "user not found").into_response();
                    }
                    let mut password = s.password.lock().unwrap();
                    if old != *password {
                        drop(password);
                        return s.refuse("PUT password: the old password is wrong");
                    }
                    *password = body["password"].as_str().unwrap_or_default().to_owned();
                    StatusCode::NO_CONTENT.into_response()
                },
            ),
        )
        .fallback(
            |State(s): State<Arc<Influx>>| async move { s.refuse("a route the rotation should not use") },
        )
        .with_state(influx)
}

/// Grafana's rules (grafana/grafana `pkg/api/user.go`): `GET /api/user` answers the signed-in user (Basic
/// authentication is on by default, `[auth.basic] enabled = true`); `PUT /api/user/password` checks the
/// body's `oldPassword` against the user's ("Invalid old password", 401) and sets `newPassword`.
#[derive(Default)]
struct Grafana {
    password: Mutex<String>,
}

fn grafana_router(grafana: Arc<Grafana>) -> Router {
    Router::new()
        .route(
            "/api/user",
            get(|State(s): State<Arc<Grafana>>, headers: HeaderMap| async move {
                match basic(&headers) {
                    Some((user, password)) if user == "admin" && password == *s.password.lock().unwrap() => {
                        axum::Json(json!({"id": 1, "login": "admin"})).into_response()
                    }
                    _ => StatusCode::UNAUTHORIZED.into_response(),
                }
            }),
        )
        .route(
            "/api/user/password",
            put(|State(s): State<Arc<Grafana>>, headers: HeaderMap, body: axum::Json<Value>| async move {
                let mut password = s.password.lock().unwrap();
                let signed_in = basic(&headers).is_some_and(|(u, p)| u == "admin" && p == *password);
                if !signed_in || body["oldPassword"].as_str() != Some(password.as_str()) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                *password = body["newPassword"].as_str().unwrap_or_default().to_owned();
                StatusCode::OK.into_response()
            }),
        )
        .with_state(grafana)
}

/// Serves `router` on a loopback port; its address.
async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

/// The script of the first container of a rendered Job's pod, pointed at `address`.
fn script_of(job: &Value, address: std::net::SocketAddr) -> String {
    let script =
        job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().expect("a /bin/sh -c script");
    let start = script.find("base='http://").expect("the service's address");
    let end = start + script[start..].find("'\n").expect("its end");
    format!("{}base='http://{address}'{}", &script[..start], &script[end + 1..])
}

/// Runs `script` under `sh` with the passwords in the environment, as the Job's Secret references give
/// them; whether it succeeded, and its stderr. Its `/tmp/` (a pod's own) is a directory of its own here,
/// so scripts of tests running at once do not share files.
async fn run(script: &str) -> (bool, String) {
    let tmp = std::env::temp_dir().join(format!("cp-job-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    // Only the pod's own scratch files (a path a test gave the script may lie under /tmp too).
    let script = ["session", "body", "new.curl", "old.curl", "admin.curl"]
        .iter()
        .fold(script.to_owned(), |s, file| {
            s.replace(&format!("/tmp/{file}"), &format!("{}/{file}", tmp.display()))
        });
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("OLD_PASSWORD", OLD)
        .env("NEW_PASSWORD", NEW)
        .output()
        .await
        .expect("sh runs");
    let _ = std::fs::remove_dir_all(&tmp);
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn the_influxdb_rotation_script_signs_in_for_a_session_and_the_request_it_replaced_is_refused() {
    let influx = Arc::new(Influx { password: Mutex::new(OLD.into()), ..Default::default() });
    let address = serve(influx_router(influx.clone())).await;
    let mi = fixture::instance("influxdb", "2.7", json!({}));
    let job = cluster_agent::render::rotation::job(&mi, 5).expect("a rotation Job").object;
    let env: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"OLD_PASSWORD") && env.contains(&"NEW_PASSWORD"), "{env:?}");

    // The request the first rotation made (cluster-agent/src/render/rotation.rs at b1d95ed): a PUT with
    // Basic credentials and no session. InfluxDB refuses it; the password stays.
    let before = "set -eu\n\
        base='http://HOST'\n\
        if curl -fsS -o /dev/null -X POST -u \"admin:$NEW_PASSWORD\" \"$base/api/v2/signin\"; then exit 0; fi\n\
        curl -fsS -c /tmp/session -o /dev/null -X POST -u \"admin:$OLD_PASSWORD\" \"$base/api/v2/signin\"\n\
        id=$(curl -fsS -b /tmp/session \"$base/api/v2/me\" | sed -n 's/.*\"id\": *\"\\([0-9a-f]*\\)\".*/\\1/p' | head -n1)\n\
        printf '{\"password\":\"%s\"}' \"$NEW_PASSWORD\" > /tmp/body\n\
        curl -fsS -o /dev/null -X PUT -u \"admin:$OLD_PASSWORD\" -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/v2/users/$id/password\"\n"
        .replace("HOST", &address.to_string());
    let (ok, stderr) = run(&before).await;
    assert!(!ok, "InfluxDB refuses a password change without a session: {stderr}");
    assert_eq!(*influx.password.lock().unwrap(), OLD);
    assert!(
        influx.refused.lock().unwrap().iter().any(|r| r == "PUT password without a session or token"),
        "{:?}",
        influx.refused.lock().unwrap()
    );

    // Today's script: signs in, changes the password; run again (a retried Job) it changes nothing.
    let script = script_of(&job, address);
    let (ok, stderr) = run(&script).await;
    assert!(ok, "the rendered rotation failed: {stderr}; refused: {:?}", influx.refused.lock().unwrap());
    assert_eq!(*influx.password.lock().unwrap(), NEW, "the password changed");
    let (ok, stderr) = run(&script).await;
    assert!(ok, "a rerun after the change succeeds: {stderr}");
    assert_eq!(*influx.password.lock().unwrap(), NEW);
}

#[tokio::test]
async fn the_grafana_rotation_script_changes_the_password_with_the_old_one_and_a_rerun_changes_nothing() {
    let grafana = Arc::new(Grafana { password: Mutex::new(OLD.into()) });
    let address = serve(grafana_router(grafana.clone())).await;
    let mi = fixture::instance("grafana", "11.6", json!({}));
    let job = cluster_agent::render::rotation::job(&mi, 5).expect("a rotation Job").object;
    let script = script_of(&job, address);
    let (ok, stderr) = run(&script).await;
    assert!(ok, "the rendered rotation failed: {stderr}");
    assert_eq!(*grafana.password.lock().unwrap(), NEW);
    let (ok, stderr) = run(&script).await;
    assert!(ok, "a rerun after the change succeeds: {stderr}");
    // With a wrong old password it fails rather than pretending.
    *grafana.password.lock().unwrap() = "someone-else-s".into();
    let (ok, _) = run(&script).await;
    assert!(!ok, "a refused change fails the Job");
}

/// Grafana's backup: the dump container's python3 `sqlite3` online backup, run for real on a SQLite
/// database another process writes to meanwhile; the copy is a consistent database (integrity check) with
/// a prefix of the rows.
#[tokio::test]
async fn the_grafana_backup_copies_a_live_sqlite_database_consistently() {
    let dir = std::env::temp_dir().join(format!("cp-grafana-backup-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("backup")).unwrap();
    let db = dir.join("data/grafana.db");
    let sql = |statement: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", &format!("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(\"{statement}\").fetchall(); c.commit(); print(r)"), db.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    sql("create table dashboard (id integer primary key, title text, data blob)");
    // A writer for the duration of the copy: a row (with a 4 KiB blob) per transaction.
    let mut writer = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,os\nc=sqlite3.connect(sys.argv[1], timeout=30)\nfor i in range(100000):\n    c.execute('insert into dashboard (title, data) values (?, ?)', (f'd{i}', os.urandom(4096))); c.commit()\n",
            db.to_str().unwrap(),
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Started writing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sql("select count(*) from dashboard") == "[(0,)]" {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
    }
    let mi = fixture::instance("grafana", "11.6", json!({}));
    let key = "acme/0193a0b0-0000-7000-8000-000000000001/backup";
    let job = cluster_agent::render::backup::job(&mi, uuid::Uuid::nil(), key).expect("a backup Job").object;
    let dump = job["spec"]["template"]["spec"]["initContainers"][0]["command"][2].as_str().unwrap();
    let dump = dump
        .replace("/var/lib/grafana/grafana.db", db.to_str().unwrap())
        .replace("/backup/artifact", dir.join("backup/artifact").to_str().unwrap());
    let (ok, stderr) = run(&dump).await;
    let _ = writer.kill().await;
    assert!(ok, "the dump failed: {stderr}");
    let copy = dir.join("backup/artifact");
    let check = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('pragma integrity_check').fetchone()[0], c.execute('select count(*), max(id) from dashboard').fetchone())", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).trim().to_owned();
    assert!(said.starts_with("ok ("), "a consistent copy: {said} {}", String::from_utf8_lossy(&check.stderr));
    // Rows 1..=n with no gap: a transaction-consistent prefix of what was written.
    let counts: Vec<&str> = said.trim_start_matches("ok (").trim_end_matches(')').split(", ").collect();
    assert_eq!(counts[0], counts[1], "no torn transaction: {said}");
    assert_ne!(counts[0], "0", "it copied rows: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The AWS CLI the backup Jobs' upload and restore steps run (`aws s3 cp`): `$CP_AWSCLI_BIN_DIR`, else
/// `.tools/awscli-<version>/bin` (PyPI `awscli`, installed by `./dev`; the image is AWS CLI v2, whose
/// `s3 cp` takes the same arguments).
pub(crate) fn aws_cli_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CP_AWSCLI_BIN_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/awscli-1.46.3/bin")
    });
    assert!(
        dir.join("aws").is_file(),
        "{} not found: run `./dev test` or `./dev tools` (installs PyPI awscli), or set CP_AWSCLI_BIN_DIR",
        dir.join("aws").display()
    );
    dir
}

/// Runs `script` under `sh` with `env` and the AWS CLI on the PATH; whether it succeeded, and its stderr.
async fn run_with(script: &str, env: &[(&str, String)]) -> (bool, String) {
    let path = format!("{}:{}", aws_cli_dir().display(), std::env::var("PATH").unwrap_or_default());
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("sh runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Grafana's backup Job and restore init container, every step for real against a real S3 store: the
/// dump (python3 sqlite3), the upload container (`aws s3 cp`, `stat`, `sha256sum`, the termination
/// message the agent reads), then the restore init container (`aws s3 cp` down, the database swapped, the
/// generation recorded), which a second run for the same generation leaves alone.
#[tokio::test]
async fn grafana_s_backup_upload_and_restore_run_for_real_against_the_store() {
    let s3 = testkit::S3Server::start();
    let dir = std::env::temp_dir().join(format!("cp-grafana-cycle-{}", uuid::Uuid::new_v4().simple()));
    for sub in ["data", "backup", "restored"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let db = dir.join("data/grafana.db");
    let made = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table dashboard (id integer primary key, title text)'); c.execute(\"insert into dashboard (title) values ('orders')\"); c.commit()", db.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(made.success());
    let mi = fixture::instance("grafana", "11.6", json!({}));
    let key = format!("acme/{}/{}", mi.spec.instance_id, uuid::Uuid::nil());
    let job = cluster_agent::render::backup::job(&mi, uuid::Uuid::nil(), &key).expect("a backup Job").object;
    let pod = &job["spec"]["template"]["spec"];
    let paths = |script: &str| {
        script
            .replace("/var/lib/grafana/grafana.db", db.to_str().unwrap())
            .replace("/backup/artifact", dir.join("backup/artifact").to_str().unwrap())
            .replace("/dev/termination-log", dir.join("termination-log").to_str().unwrap())
    };
    // The store's variables as the Job's env names them (from the instance's store Secret).
    let names: Vec<&str> =
        pod["containers"][0]["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    let env = vec![
        ("ENDPOINT", s3.endpoint()),
        ("BUCKET", testkit::s3::BACKUP_BUCKET.to_owned()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("KEY", key.clone()),
    ];
    for (name, _) in &env {
        assert!(names.contains(name), "the upload container gets {name}: {names:?}");
    }
    let (ok, stderr) = run_with(&paths(pod["initContainers"][0]["command"][2].as_str().unwrap()), &[]).await;
    assert!(ok, "the dump failed: {stderr}");
    let (ok, stderr) = run_with(&paths(pod["containers"][0]["command"][2].as_str().unwrap()), &env).await;
    assert!(ok, "the upload failed: {stderr}");
    // What the agent reads from the termination message is what the store holds.
    let said: cluster_agent::render::backup::Uploaded =
        serde_json::from_str(&std::fs::read_to_string(dir.join("termination-log")).unwrap())
            .expect("its JSON");
    let store = backup_store::BackupStore::new(&backup_store::StoreConfig {
        endpoint: s3.endpoint(),
        bucket: testkit::s3::BACKUP_BUCKET.to_owned(),
        region: "us-east-1".into(),
        access_key_id: s3.access_key().to_owned(),
        secret_access_key: s3.secret_key().to_owned(),
    })
    .unwrap();
    assert_eq!(
        store.verify(&key, said.size, &said.sha256).await.unwrap(),
        backup_store::Verification::Matches
    );

    // The restore init container, for generation 7, into an empty data directory.
    let restore = cluster_agent::render::backup::grafana_restore(&mi, 7, &key);
    let mut script = restore["command"][2]
        .as_str()
        .unwrap()
        .replace("/var/lib/grafana", dir.join("restored").to_str().unwrap());
    let root =
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        // Only root may hand the file to Grafana's uid; the rest runs as is.
        script = script.replace("chown 472:0", "true");
    }
    let (ok, stderr) = run_with(&script, &env).await;
    assert!(ok, "the restore failed: {stderr}");
    let rows = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select title from dashboard').fetchall())", dir.join("restored/grafana.db").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "[('orders',)]",
        "the backed-up database is in place"
    );
    assert_eq!(std::fs::read_to_string(dir.join("restored/.cp-restore-generation")).unwrap().trim(), "7");
    // Run again for the same generation (the pod restarted): it downloads nothing (the object is gone now).
    store.delete(&key).await.unwrap();
    let (ok, stderr) = run_with(&script, &env).await;
    assert!(ok, "a restore already made is not made again: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

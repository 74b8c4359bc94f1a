//! InfluxDB's backup Job (signin → operator token → `influx backup` → tar → `aws s3 cp`) and restore
//! Job (`aws s3 cp` → signin → `influx bucket list`/`delete` → `influx restore`), against the fake
//! `influx` CLI (`fake_tools/influx.py`) talking to the InfluxDB fake (`influx_fake`).

use std::{collections::BTreeMap, sync::Arc};

use serde_json::json;

use super::{
    Pod, Store, all_succeeded, assert_uploaded_alone,
    influx_fake::{self, Influx},
};
use crate::fixture;

const PASSWORD: &str = "admin-password-of-the-instance";

/// The buckets of the project's org at the backup: two named ones (one with a space, which `influx bucket
/// list`'s tab-padded table keeps in one field) and twenty more, so the listing takes two pages (the
/// CLI's page size is 20).
fn buckets() -> Vec<(String, String)> {
    let mut buckets = vec![
        ("metrics".to_owned(), "metrics at the backup".to_owned()),
        ("site events".to_owned(), "site events at the backup".to_owned()),
    ];
    buckets.extend((0..20).map(|i| (format!("b{i:02}"), format!("points of b{i:02}"))));
    buckets
}

fn influx() -> Arc<Influx> {
    let buckets = buckets();
    let refs: Vec<(&str, &str)> = buckets.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    Influx::new(PASSWORD, "acme", &refs)
}

async fn serve(influx: Arc<Influx>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = influx_fake::router(influx);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

fn secrets(store: &Store, mi: &cluster_agent::crd::ManagedInstance) -> BTreeMap<String, String> {
    let mut secrets = store.secret(mi);
    secrets.insert("orders-credentials/password".into(), PASSWORD.into());
    secrets
}

/// The backup uploads `influx backup`'s directory, tarred, under the instance's prefix, made with the
/// operator token read through a signed-in session; the restore downloads that object, deletes exactly
/// the org's non-system buckets (all pages of them) with that token, and `influx restore` recreates the
/// backup's buckets with their data. Run again (a retried Job), it ends the same.
#[tokio::test]
async fn influxdb_backup_and_restore_run_for_real_through_the_store() {
    let store = Store::start();
    let mi = fixture::instance("influxdb", "2.7", json!({}));
    let backup_id = uuid::Uuid::new_v4();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let influx = influx();
    let address = serve(influx.clone()).await;
    let pod = Pod::new();
    let calls = pod.dir.join("influx-calls");
    let env = [("FAKE_INFLUX_CALLS", calls.display().to_string())];

    let job = cluster_agent::render::backup::job(&mi, backup_id, &key).expect("a backup Job").object;
    let ran = pod.run(&job["spec"]["template"]["spec"], &secrets(&store, &mi), Some(address), &env).await;
    all_succeeded(&ran, &["dump", "upload"]);
    assert_uploaded_alone(&store, &pod.dir, &mi.spec.instance_id, &key).await;
    let tar =
        std::process::Command::new("tar").arg("-tzf").arg(pod.dir.join("backup/artifact")).output().unwrap();
    let files = String::from_utf8_lossy(&tar.stdout).into_owned();
    assert!(files.lines().any(|f| f.starts_with("dump/") && f.ends_with(".manifest")), "{files}");
    let log = influx_fake::log(&influx);
    assert!(log.iter().any(|l| l.starts_with("GET /api/v2/authorizations?user=admin session")), "{log:#?}");
    assert!(
        log.iter().any(|l| l == "GET /api/v2/backup/metadata token:operator"),
        "the backup uses the operator token (the first of the admin's): {log:#?}"
    );

    // Since the backup: a bucket's data changed, one deleted, one made.
    {
        let mut inner = influx.inner.lock().unwrap();
        inner.buckets.iter_mut().find(|b| b.name == "metrics").unwrap().data = b"metrics later".to_vec();
        inner.buckets.retain(|b| b.name != "site events");
        let org = inner.orgs["acme"].clone();
        inner.buckets.push(influx_fake::Bucket {
            id: "0bff000000000001".into(),
            org_id: org,
            name: "made after the backup".into(),
            system: false,
            shard: 9999,
            data: b"new".to_vec(),
        });
        inner.log.clear();
    }
    let system_before: Vec<String> = system_ids(&influx);
    std::fs::remove_dir_all(pod.dir.join("backup")).unwrap();
    std::fs::create_dir_all(pod.dir.join("backup")).unwrap();

    let restore = cluster_agent::render::backup::restore_job(&mi, 5, &key).expect("a restore Job").object;
    let spec = &restore["spec"]["template"]["spec"];
    let expected: BTreeMap<String, (bool, String)> = buckets()
        .into_iter()
        .map(|(n, d)| (n, (false, d)))
        .chain([
            ("_monitoring".to_owned(), (true, String::new())),
            ("_tasks".to_owned(), (true, String::new())),
        ])
        .collect();
    for attempt in ["first run", "a retried Job"] {
        std::fs::remove_dir_all(pod.dir.join("backup")).unwrap();
        std::fs::create_dir_all(pod.dir.join("backup")).unwrap();
        influx.inner.lock().unwrap().log.clear();
        let ran = pod.run(spec, &secrets(&store, &mi), Some(address), &env).await;
        all_succeeded(&ran, &["download", "restore"]);
        assert_eq!(
            influx.buckets_of("acme"),
            expected,
            "{attempt}: the backup's buckets and data, the system ones kept"
        );
        assert_eq!(system_ids(&influx), system_before, "{attempt}: the system buckets were never deleted");
        let log = influx_fake::log(&influx);
        let deletes = log.iter().filter(|l| l.starts_with("DELETE /api/v2/buckets/")).collect::<Vec<_>>();
        assert_eq!(deletes.len(), 22, "{attempt}: every user bucket of the org, across both pages: {log:#?}");
        assert!(deletes.iter().all(|l| l.ends_with("token:operator")), "{attempt}: {deletes:#?}");
        assert!(
            log.iter().any(|l| l.starts_with("GET /api/v2/buckets?org=acme") && l.contains("offset=20")),
            "{attempt}: the second page was read: {log:#?}"
        );
    }
    assert_eq!(influx.inner.lock().unwrap().refused, Vec::<String>::new(), "nothing was refused");
}

fn system_ids(influx: &Influx) -> Vec<String> {
    influx.inner.lock().unwrap().buckets.iter().filter(|b| b.system).map(|b| b.id.clone()).collect()
}

/// A backup that fails in `influx backup` fails the dump container (`set -e`) before the tar: no artifact,
/// the upload never runs, nothing reaches the store. A wrong password fails at the sign-in.
#[tokio::test]
async fn a_failing_influx_backup_fails_the_job_and_uploads_nothing() {
    let store = Store::start();
    let mi = fixture::instance("influxdb", "2.7", json!({}));
    let backup_id = uuid::Uuid::new_v4();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let influx = influx();
    influx.inner.lock().unwrap().fail_shards = true;
    let address = serve(influx.clone()).await;
    let pod = Pod::new();
    let job = cluster_agent::render::backup::job(&mi, backup_id, &key).expect("a backup Job").object;
    let spec = &job["spec"]["template"]["spec"];
    let ran = pod.run(spec, &secrets(&store, &mi), Some(address), &[]).await;
    assert_eq!(ran.len(), 1, "only the dump ran: {ran:?}");
    assert!(!ran[0].1 && ran[0].2.contains("failed to backup bucket data"), "{:?}", ran[0]);
    assert!(!pod.dir.join("backup/artifact").exists(), "no artifact");
    assert!(store.client().list(&format!("acme/{}/", mi.spec.instance_id)).await.unwrap().is_empty());

    influx.inner.lock().unwrap().fail_shards = false;
    let mut wrong = secrets(&store, &mi);
    wrong.insert("orders-credentials/password".into(), "not-the-password".into());
    let ran = pod.run(spec, &wrong, Some(address), &[]).await;
    assert!(ran.len() == 1 && !ran[0].1, "{ran:?}");
    assert!(store.client().list(&format!("acme/{}/", mi.spec.instance_id)).await.unwrap().is_empty());
}

/// The fake CLI refuses what `influx` refuses: an undefined flag, a missing path, a bucket delete without
/// an id or name, a listing without an org, and requests without a token.
#[tokio::test]
async fn the_influx_fake_refuses_what_the_cli_refuses() {
    let influx = influx();
    let address = serve(influx.clone()).await;
    let host = format!("http://{address}");
    // Asynchronously: the fake server runs on this test's (single) thread.
    let run = async |args: Vec<&str>, token: &str| {
        let out = tokio::process::Command::new("python3")
            .arg(format!("{}/influx.py", super::TOOLS))
            .args(args)
            .env("INFLUX_TOKEN", token)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let op = influx_fake::OPERATOR_TOKEN;
    let (code, out, _) =
        run(vec!["bucket", "list", "--host", &host, "--org", "acme", "--hide-headers"], op).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines().any(|l| l.split('\t').filter(|c| !c.is_empty()).nth(1) == Some("site events")),
        "{out}"
    );
    for (args, token, says) in [
        (vec!["backup", "--hots", &host, "/tmp/x"], op, "flag provided but not defined: -hots"),
        // After the path urfave/cli does not move an unknown flag (`reorderArgs`): it is a second path.
        (vec!["backup", "/tmp/x", "--hots", &host], op, "backup path must be specified"),
        (vec!["backup", "--host", &host], op, "backup path must be specified"),
        (vec!["restore", "--host", &host], op, "restore path must be specified"),
        (vec!["bucket", "delete", "--host", &host], op, "must specify bucket ID or bucket name"),
        (vec!["bucket", "list", "--host", &host], op, "must specify org ID or org name"),
        (vec!["bucket", "rm", "--host", &host], op, "unknown command"),
        (vec!["bucket", "list", "--host", &host, "--org", "acme"], "", "401 Unauthorized"),
    ] {
        let (code, _, stderr) = run(args.clone(), token).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} says {says:?}: {stderr}");
    }
    // The server refuses a system bucket's deletion.
    let system = system_ids(&influx)[0].clone();
    let (code, _, stderr) = run(vec!["bucket", "delete", "--host", &host, "--id", &system], op).await;
    assert!(code == Some(1) && stderr.contains("system buckets cannot be deleted"), "{stderr}");
}

/// A step of the restore that fails stops it there: a bucket listing that fails deletes and restores
/// nothing, and a token that could not be read (the request failed, or the answer had none) sends no
/// request without one. (A pipeline's status is its last command's: POSIX Shell Command Language, 2.9.2 *Pipelines*; dash, the images' `sh`, refuses
/// `set -o pipefail` (0.5.12), so `set -e` alone does not see a failure on the left of a `|`.)
#[tokio::test]
async fn a_failing_step_stops_the_influxdb_restore_before_anything_changes() {
    let store = Store::start();
    let mi = fixture::instance("influxdb", "2.7", json!({}));
    let backup_id = uuid::Uuid::new_v4();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let influx = influx();
    let address = serve(influx.clone()).await;
    let pod = Pod::new();
    let job = cluster_agent::render::backup::job(&mi, backup_id, &key).expect("a backup Job").object;
    let ran = pod.run(&job["spec"]["template"]["spec"], &secrets(&store, &mi), Some(address), &[]).await;
    all_succeeded(&ran, &["dump", "upload"]);
    let before = influx.buckets_of("acme");
    let restore = cluster_agent::render::backup::restore_job(&mi, 5, &key).expect("a restore Job").object;
    let spec = &restore["spec"]["template"]["spec"];

    for fault in ["the bucket listing", "the token lookup", "an answer without a token"] {
        {
            let mut inner = influx.inner.lock().unwrap();
            inner.log.clear();
            inner.fail_listing = fault == "the bucket listing";
            inner.fail_authorizations = fault == "the token lookup";
            inner.no_tokens = fault == "an answer without a token";
        }
        std::fs::remove_dir_all(pod.dir.join("backup")).unwrap();
        std::fs::create_dir_all(pod.dir.join("backup")).unwrap();
        let ran = pod.run(spec, &secrets(&store, &mi), Some(address), &[]).await;
        assert!(ran.len() == 2 && !ran[1].1, "{fault} fails the restore: {ran:?}");
        let log = influx_fake::log(&influx);
        let changes: Vec<&String> =
            log.iter().filter(|l| l.starts_with("DELETE") || l.starts_with("POST /api/v2/restore")).collect();
        assert!(changes.is_empty(), "{fault} failed, yet the restore went on: {changes:#?}");
        assert_eq!(influx.buckets_of("acme"), before, "{fault}: nothing changed");
        assert_eq!(
            influx.inner.lock().unwrap().refused,
            Vec::<String>::new(),
            "{fault}: no request without credentials"
        );
    }
}

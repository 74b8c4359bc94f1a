//! MongoDB's backup Job (mongodump → `aws s3 cp`) and restore Job (`aws s3 cp` → mongorestore →
//! mongosh), against the fake tools of `fake_tools/mongo_tools.py` and `fake_tools/mongosh.js`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Pod, Store, all_succeeded, assert_uploaded_alone};
use crate::fixture;

const KEYFILE: &str = "the-replica-set-keyfile-0123456789";
const AT_BACKUP: &str = "root-password-at-backup";
const NOW: &str = "root-password-now";

/// The replica set the rendered scripts must name: `rs0`, its members by their StatefulSet DNS names
/// (`<pod>.<governing service>.<namespace>.svc.cluster.local`: Kubernetes docs, *StatefulSets*, stable
/// network ID).
fn server(root_password: &str) -> Value {
    json!({
        "replicaSet": "rs0",
        "members": (0..3).map(|i| format!("orders-{i}.orders.cp-acme.svc.cluster.local:27017")).collect::<Vec<_>>(),
        "keyfile": KEYFILE,
        "collections": {
            "admin.system.users": [{"_id": "admin.root", "user": "root", "db": "admin", "pwd": root_password,
                                    "roles": [{"role": "root", "db": "admin"}]}],
            "shop.orders": [{"_id": 1, "item": "written before the backup"}],
        },
        // Written while mongodump runs: only the oplog it captures (`--oplog`) brings it back.
        "writesDuringDump": [{"ns": "shop.orders", "doc": {"_id": 2, "item": "written during the dump"}}],
    })
}

struct Mongo {
    pod: Pod,
    state: std::path::PathBuf,
}

impl Mongo {
    fn new(server: &Value) -> Self {
        let pod = Pod::new();
        let state = pod.dir.join("server.json");
        std::fs::write(&state, serde_json::to_vec(server).unwrap()).unwrap();
        Mongo { pod, state }
    }
    fn read(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.state).unwrap()).unwrap()
    }
    fn write(&self, value: &Value) {
        std::fs::write(&self.state, serde_json::to_vec(value).unwrap()).unwrap();
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("FAKE_MONGO_STATE", self.state.display().to_string())]
    }
    /// The tools' command lines, in order.
    fn calls(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.state.with_extension("json.calls")).unwrap_or_default();
        log.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn secrets(
    store: &Store,
    mi: &cluster_agent::crd::ManagedInstance,
    password: &str,
) -> BTreeMap<String, String> {
    let mut secrets = store.secret(mi);
    secrets.insert("orders-credentials/password".into(), password.into());
    secrets.insert("orders-keyfile/keyfile".into(), KEYFILE.into());
    secrets
}

fn orders(server: &Value) -> Vec<Value> {
    server["collections"]["shop.orders"].as_array().cloned().unwrap_or_default()
}

fn root_password(server: &Value) -> String {
    server["collections"]["admin.system.users"][0]["pwd"].as_str().unwrap_or_default().to_owned()
}

/// The backup uploads mongodump's archive (with the oplog of the dump) under the instance's prefix, and
/// reports its size and checksum; the restore downloads that same object, replaces the collections with
/// the dump's, replays the oplog, and makes root's password the instance's current one again.
#[tokio::test]
async fn mongodb_backup_and_restore_run_for_real_through_the_store() {
    let store = Store::start();
    let mi = fixture::instance("mongodb", "7.0", json!({}));
    let backup_id = uuid::Uuid::new_v4();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let mongo = Mongo::new(&server(AT_BACKUP));

    let job = cluster_agent::render::backup::job(&mi, backup_id, &key).expect("a backup Job").object;
    let pod = &job["spec"]["template"]["spec"];
    let ran = mongo.pod.run(pod, &secrets(&store, &mi, AT_BACKUP), None, &mongo.env()).await;
    all_succeeded(&ran, &["dump", "upload"]);
    assert_uploaded_alone(&store, &mongo.pod.dir, &mi.spec.instance_id, &key).await;
    let dumped = &mongo.calls()[0];
    assert!(dumped.contains(&"--oplog".to_owned()) && dumped.contains(&"--gzip".to_owned()), "{dumped:?}");

    // Since the backup: a document deleted, one added, root's password rotated.
    let mut now = mongo.read();
    now["collections"]["shop.orders"] = json!([
        {"_id": 2, "item": "written during the dump"}, {"_id": 3, "item": "written after the backup"}]);
    now["collections"]["admin.system.users"][0]["pwd"] = json!(NOW);
    mongo.write(&now);
    std::fs::remove_file(mongo.pod.dir.join("backup/artifact")).unwrap();

    let restore = cluster_agent::render::backup::restore_job(&mi, 5, &key).expect("a restore Job").object;
    let pod = &restore["spec"]["template"]["spec"];
    let ran = mongo.pod.run(pod, &secrets(&store, &mi, NOW), None, &mongo.env()).await;
    all_succeeded(&ran, &["download", "restore"]);
    let after = mongo.read();
    assert_eq!(
        orders(&after),
        vec![
            json!({"_id": 1, "item": "written before the backup"}),
            json!({"_id": 2, "item": "written during the dump"})
        ],
        "the set as it was at the end of the dump: collections replaced (--drop), oplog replayed"
    );
    assert_eq!(root_password(&after), NOW, "root signs in with the instance's password after the restore");
    let calls = mongo.calls();
    let tools: Vec<&str> = calls.iter().skip(1).map(|c| c[0].as_str()).collect();
    assert_eq!(tools, ["mongorestore", "mongosh"], "restored once with the oplog, then root's password");
}

/// A backup made before instances were replica sets has no oplog: the restore's first attempt
/// (`--oplogReplay`) fails as mongorestore does, and the script restores it without replay.
#[tokio::test]
async fn a_mongodb_backup_without_an_oplog_is_restored_without_replay() {
    let store = Store::start();
    let mi = fixture::instance("mongodb", "7.0", json!({}));
    let key = format!("acme/{}/{}", mi.spec.instance_id, uuid::Uuid::new_v4());
    let mongo = Mongo::new(&server(AT_BACKUP));
    // The old backup Job's dump: no --oplog.
    let old = std::process::Command::new("python3")
        .arg(format!("{}/mongo_tools.py", super::TOOLS))
        .args([
            "mongodump",
            "--uri",
            "mongodb://orders-0.orders.cp-acme.svc.cluster.local:27017/?replicaSet=rs0",
            "--username",
            "root",
            "--password",
            AT_BACKUP,
            "--gzip",
        ])
        .arg(format!("--archive={}", mongo.pod.dir.join("old-artifact").display()))
        .env("FAKE_MONGO_STATE", &mongo.state)
        .output()
        .unwrap();
    assert!(old.status.success(), "{}", String::from_utf8_lossy(&old.stderr));
    store.client().put(&key, std::fs::read(mongo.pod.dir.join("old-artifact")).unwrap()).await.unwrap();
    let mut now = mongo.read();
    now["collections"]["shop.orders"] = json!([{"_id": 3, "item": "written after the backup"}]);
    mongo.write(&now);

    let restore = cluster_agent::render::backup::restore_job(&mi, 5, &key).expect("a restore Job").object;
    let ran = mongo
        .pod
        .run(&restore["spec"]["template"]["spec"], &secrets(&store, &mi, AT_BACKUP), None, &mongo.env())
        .await;
    all_succeeded(&ran, &["download", "restore"]);
    assert!(
        ran[1].2.contains("no oplog file to replay"),
        "the first attempt's reason is shown: {}",
        ran[1].2
    );
    assert_eq!(orders(&mongo.read()), vec![json!({"_id": 1, "item": "written before the backup"})]);
    let restores: Vec<bool> = mongo
        .calls()
        .iter()
        .filter(|c| c[0] == "mongorestore")
        .map(|c| c.contains(&"--oplogReplay".to_owned()))
        .collect();
    assert_eq!(restores, [true, false], "with replay, then without");
}

/// A dump that fails fails its container (`set -e`): the upload container never runs, nothing reaches
/// the store, although mongodump left part of an archive behind.
#[tokio::test]
async fn a_failing_mongodump_fails_the_backup_and_uploads_nothing() {
    let store = Store::start();
    let mi = fixture::instance("mongodb", "7.0", json!({}));
    let backup_id = uuid::Uuid::new_v4();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let mut broken = server(AT_BACKUP);
    broken["failDump"] =
        json!("error writing data for collection `shop.orders` to disk: no space left on device");
    let mongo = Mongo::new(&broken);
    let job = cluster_agent::render::backup::job(&mi, backup_id, &key).expect("a backup Job").object;
    let ran = mongo
        .pod
        .run(&job["spec"]["template"]["spec"], &secrets(&store, &mi, AT_BACKUP), None, &mongo.env())
        .await;
    assert_eq!(ran.len(), 1, "only the dump ran: {ran:?}");
    assert!(!ran[0].1 && ran[0].2.contains("no space left"), "{:?}", ran[0]);
    assert!(mongo.pod.dir.join("backup/artifact").exists(), "a partial archive was left behind");
    assert!(store.client().list(&format!("acme/{}/", mi.spec.instance_id)).await.unwrap().is_empty());

    // A wrong password fails the dump too (nothing prompts for another).
    let mongo = Mongo::new(&server(AT_BACKUP));
    let ran = mongo
        .pod
        .run(&job["spec"]["template"]["spec"], &secrets(&store, &mi, "a-wrong-one"), None, &mongo.env())
        .await;
    assert!(ran.len() == 1 && !ran[0].1 && ran[0].2.contains("Authentication failed"), "{ran:?}");
}

/// The fakes refuse what the real tools refuse: an unknown or misspelt flag, `--archive PATH` (the
/// value is optional, so it must be attached with `=`), a username without a password, an unknown key
/// in the `--config` file, mongosh's unknown arguments.
#[test]
fn the_mongo_fakes_refuse_what_the_tools_refuse() {
    let pod = Pod::new();
    let state = pod.dir.join("server.json");
    std::fs::write(&state, serde_json::to_vec(&server(AT_BACKUP)).unwrap()).unwrap();
    let config = pod.dir.join("tools.yaml");
    std::fs::write(&config, format!("password: \"{AT_BACKUP}\"\n")).unwrap();
    let bad_config = pod.dir.join("bad.yaml");
    std::fs::write(&bad_config, format!("pasword: \"{AT_BACKUP}\"\n")).unwrap();
    let uri =
        "--uri=mongodb://orders-0.orders.cp-acme.svc.cluster.local:27017/?replicaSet=rs0&authSource=admin";
    let archive = format!("--archive={}", pod.dir.join("a").display());
    let run = |program: &str, args: &[&str]| {
        let (bin, first) = if program == "mongosh" {
            ("node", format!("{}/mongosh.js", super::TOOLS))
        } else {
            ("python3", format!("{}/mongo_tools.py", super::TOOLS))
        };
        let mut command = std::process::Command::new(bin);
        command.arg(first);
        if program != "mongosh" {
            command.arg(program);
        }
        let out = command.args(args).env("FAKE_MONGO_STATE", &state).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let config_arg = format!("--config={}", config.display());
    let (code, _) = run("mongodump", &[uri, "-u", "root", &config_arg, "--oplog", &archive, "--gzip"]);
    assert_eq!(code, Some(0), "the accepted form works");
    for (tool, args, says) in [
        (
            "mongodump",
            vec![uri, "-u", "root", &config_arg, "--oplog", "--archiv=/x"],
            "unknown option \"archiv\"",
        ),
        (
            "mongodump",
            vec![uri, "-u", "root", &config_arg, "--archive", "/x"],
            "error parsing positional arguments",
        ),
        ("mongodump", vec![uri, "-u", "root", &archive], "error reading password"),
        (
            "mongodump",
            vec![uri, "-u", "root", &config_arg, "--gzip=true", &archive],
            "cannot have an argument",
        ),
        (
            "mongorestore",
            vec![uri, "-u", "root", &config_arg, "--oplog-replay", &archive],
            "unknown option \"oplog-replay\"",
        ),
        (
            "mongorestore",
            vec![uri, "-u", "root", &config_arg, "--authenticationDatabase", "local", &archive],
            "Cannot specify different authenticationDatabase",
        ),
    ] {
        let (code, stderr) = run(tool, &args);
        assert_eq!(code, Some(1), "{tool} {args:?}: {stderr}");
        assert!(stderr.contains(says), "{tool} {args:?} says {says:?}: {stderr}");
    }
    let bad = format!("--config={}", bad_config.display());
    let (code, stderr) = run("mongodump", &[uri, "-u", "root", &bad, &archive]);
    assert!(code == Some(1) && stderr.contains("field pasword not found"), "{stderr}");
    let (code, stderr) = run(
        "mongosh",
        &[
            "mongodb://orders-0.orders.cp-acme.svc.cluster.local:27017/admin?replicaSet=rs0",
            "--quite",
            "--eval",
            "1",
        ],
    );
    assert!(code == Some(1) && stderr.contains("Unknown argument: --quite"), "{stderr}");
    let (code, stderr) = run(
        "mongosh",
        &[
            "mongodb://orders-0.orders.cp-acme.svc.cluster.local:27017/admin?replicaSet=rs0",
            "--quiet",
            "--eval",
            "db.getSiblingDB(\"admin\").changeUserPassword(\"root\", \"x\")",
        ],
    );
    assert!(
        code == Some(1) && stderr.contains("not authorized"),
        "a user change needs a signed-in user: {stderr}"
    );
}

//! MongoDB as a replica set built by the agent (`render::replset`; ARCHITECTURE.md, *HA plans*). No
//! backend runs mongod, so each test states the upstream fact it encodes and checks the rendered objects
//! against it; the scenario runs on both backends; every shell script rendered passes `sh -n` and every
//! piece of JavaScript given to mongosh `node --check`.

use crate::common;
use crate::fixture;

use std::{io::Write as _, process::Command};

use base64::Engine as _;
use cluster_agent::{
    crd::{ManagedInstance, RestoreTarget},
    render::{self, Child, ChildKind, replset},
};
use common::*;
use domain::{InstanceCommand, ProvisionInstance, ServiceType, UpdateInstance};
use serde_json::{Value, json};
use streams::CommandMetadata;

fn child(children: &[Child], kind: ChildKind) -> &Value {
    &children.iter().find(|c| c.kind == kind).unwrap_or_else(|| panic!("a {kind:?}")).object
}

fn replset_job(children: &[Child]) -> &Value {
    &children.iter().find(|c| replset::is_replset_job(c)).expect("the replica set's Job").object
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// The member list the replica set's Job moves the set to: the JavaScript's `members`.
fn job_members(job: &Value) -> Vec<String> {
    let js =
        env(&job["spec"]["template"]["spec"]["containers"][0], "REPLSET_JS").expect("REPLSET_JS")["value"]
            .as_str()
            .unwrap()
            .to_owned();
    let list = js.lines().next().unwrap().trim_start_matches("const members = ").trim_end_matches(';');
    serde_json::from_str(list).expect("a JSON list of members")
}

/// docker-library/mongo 7.0: the entrypoint passes arguments starting with `-` to mongod, and leaves
/// `--replSet` and `--keyFile` out of its temporary first server only (docker-entrypoint.sh); mongod runs
/// as uid 999 (Dockerfile). MongoDB manual, *Self-Managed Internal/Membership Authentication*: a key of 6
/// to 1024 base64 characters; "on UNIX systems, the keyfile must not have group or world permissions"
/// (mongo src/mongo/db/auth/security_file.cpp refuses it "too open"). Kubernetes: a Secret volume's files
/// belong to root, and a pod `fsGroup` adds group read to them (k8s.io/kubernetes v1.36.1
/// pkg/volume/volume_linux.go `roMask = 0440`); a StatefulSet pod is `<set>-<ordinal>` under its headless
/// Service, whose `publishNotReadyAddresses` publishes members before they are ready (k8s.io/api v0.36.1
/// core/v1/types.go).
#[test]
fn a_mongodb_instance_is_a_replica_set_with_a_keyfile_and_members_by_stable_names() {
    let mi = fixture::instance("mongodb", "7.0", json!({}));
    let children = render::render(&mi, None);
    let set = child(&children, ChildKind::StatefulSet);
    let pod = &set["spec"]["template"]["spec"];
    let main = &pod["containers"][0];
    let args: Vec<&str> = main["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let after = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
    assert_eq!(after("--replSet"), Some("rs0"), "{args:?}");
    assert_eq!(after("--keyFile"), Some(replset::KEYFILE_PATH), "{args:?}");
    assert!(args.contains(&"--config"), "the entrypoint's arguments, each starting with '-': {args:?}");

    // The keyfile mongod reads: a copy in an emptyDir, made by an init container from the Secret.
    let mount = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| replset::KEYFILE_PATH.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())));
    let mount = mount.expect("the keyfile's directory is mounted");
    let volume =
        |name: &Value| pod["volumes"].as_array().unwrap().iter().find(|v| &v["name"] == name).unwrap();
    assert!(volume(&mount["name"]).get("emptyDir").is_some(), "{mount}");
    let secret_volume =
        pod["volumes"].as_array().unwrap().iter().find(|v| v.get("secret").is_some()).unwrap();
    assert_eq!(secret_volume["secret"]["secretName"], "orders-keyfile");
    assert_eq!(secret_volume["secret"]["defaultMode"], 0o400, "root only: {secret_volume}");
    assert!(pod["securityContext"].get("fsGroup").is_none(), "fsGroup would make the key group-readable");
    let init = &pod["initContainers"][0];
    let copy = init["command"][2].as_str().unwrap();
    assert!(
        copy.contains(&format!(
            "install -o 999 -g 999 -m 0400 /etc/cp-mongo-keyfile-secret/keyfile {}",
            replset::KEYFILE_PATH
        )),
        "owned by mongod's user, not group or world readable: {copy}"
    );
    assert!(init.get("securityContext").is_none(), "root, the image's user, may chown: {init}");

    // Only member 0 creates the root user (the others take it from the primary by initial sync).
    let command = main["command"][2].as_str().expect("a wrapper around the entrypoint");
    assert!(
        command.contains("\"${HOSTNAME##*-}\" != 0") && command.contains("unset MONGO_INITDB_ROOT_USERNAME")
    );
    assert!(command.contains("exec docker-entrypoint.sh \"$@\""), "{command}");

    // Members by stable names, published before they are ready.
    let service = child(&children, ChildKind::Service);
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(set["spec"]["serviceName"], service["metadata"]["name"]);
    assert_eq!(
        job_members(replset_job(&children)),
        [0, 1, 2].map(|i| format!("orders-{i}.orders.cp-acme.svc.cluster.local:27017")),
    );
    // A scaled-away member's claim goes with it: a member added later makes its data by initial sync.
    assert_eq!(set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Delete");

    // The key: base64, at most 1024 characters, different each time, in a Secret written once.
    let key = replset::new_key();
    assert_eq!(key.len(), 1008, "openssl rand -base64 756");
    assert!(base64::engine::general_purpose::STANDARD.decode(&key).is_ok_and(|b| b.len() == 756));
    assert_ne!(key, replset::new_key());
    let secrets = render::secrets_made_once(&mi, "pw", &key);
    let keyfile = secrets.iter().find(|s| s.name == "orders-keyfile").expect("the keyfile Secret");
    assert_eq!(keyfile.object["stringData"]["keyfile"], key.as_str());
    assert!(keyfile.object["metadata"]["labels"].get(render::GENERATION_LABEL).is_none(), "written once");
}

/// Every Job that talks to a MongoDB instance names the replica set (`replicaSet=rs0`, every member as
/// seed: MongoDB manual, *Connection Strings*), so a rotation changes the password once, on the primary,
/// and a backup is one point in time (`mongodump --oplog`, mongodb/mongo-tools 100.13.0
/// mongodump/options.go), read from one member.
#[test]
fn rotation_backup_and_restore_talk_to_the_replica_set() {
    let mut mi = fixture::instance("mongodb", "7.0", json!({}));
    let seeds = replset::members(&mi).join(",");
    let rotation = render::rotation::job(&mi, 5).unwrap().object;
    let script = rotation["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(script.contains(&format!("uri='mongodb://{seeds}/admin?replicaSet=rs0'")), "{script}");
    let backup = render::backup::job(&mi, uuid::Uuid::nil(), "k").unwrap().object;
    let dump = backup["spec"]["template"]["spec"]["initContainers"][0]["command"][2].as_str().unwrap();
    let dump = dump.lines().find(|l| l.starts_with("mongodump")).unwrap();
    assert!(dump.contains(" --oplog "), "{dump}");
    assert!(dump.contains(&format!("'mongodb://{seeds}/?replicaSet=rs0&")), "{dump}");
    assert!(dump.contains("readPreference=primary"), "one member's data and oplog: {dump}");
    mi.spec.restore = Some(RestoreTarget { backup_id: "b".into(), location: "k".into(), target_time: None });
    let restore = render::backup::restore_job(&mi, 6, "k").unwrap().object;
    let script = restore["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(script.contains(&format!("'mongodb://{seeds}/?replicaSet=rs0'")), "{script}");
}

/// `(what, text)` of each script.
type Scripts = Vec<(String, String)>;

/// The shell scripts and JavaScript of every object the agent renders for a MongoDB instance.
fn scripts(mi: &ManagedInstance) -> (Scripts, Scripts) {
    let mut objects: Vec<(String, Value)> =
        render::render(mi, None).into_iter().map(|c| (c.name, c.object)).collect();
    objects.push(("rotation".into(), render::rotation::job(mi, 5).unwrap().object));
    objects.push(("backup".into(), render::backup::job(mi, uuid::Uuid::nil(), "k").unwrap().object));
    let mut restoring = mi.clone();
    restoring.spec.restore =
        Some(RestoreTarget { backup_id: "b".into(), location: "k".into(), target_time: None });
    objects.push(("restore".into(), render::backup::restore_job(&restoring, 6, "k").unwrap().object));
    let (mut shell, mut js) = (Vec::new(), Vec::new());
    for (name, object) in objects {
        let pod = if object["kind"] == "StatefulSet" || object["kind"] == "Job" {
            &object["spec"]["template"]["spec"]
        } else {
            continue;
        };
        for container in ["initContainers", "containers"]
            .iter()
            .flat_map(|l| pod[l].as_array().cloned().unwrap_or_default())
        {
            let what = format!("{name}/{}", container["name"].as_str().unwrap());
            let command = container["command"].as_array().cloned().unwrap_or_default();
            if command.first().and_then(Value::as_str) == Some("/bin/sh") {
                let script = command[2].as_str().unwrap().to_owned();
                // Each `--eval '…'` of mongosh is JavaScript (single-quoted: it holds no single quote).
                for (i, piece) in script.split("--eval '").skip(1).enumerate() {
                    js.push((format!("{what} eval {i}"), piece.split('\'').next().unwrap().to_owned()));
                }
                shell.push((what.clone(), script));
            }
            if let Some(value) = env(&container, "REPLSET_JS").and_then(|e| e["value"].as_str()) {
                js.push((format!("{what} REPLSET_JS"), value.to_owned()));
            }
        }
    }
    (shell, js)
}

fn check(tool: &str, args: &[&str], extension: &str, what: &str, text: &str) -> Result<(), String> {
    let mut file = tempfile_with(extension);
    file.1.write_all(text.as_bytes()).unwrap();
    drop(file.1);
    let mut all: Vec<&str> = args.to_vec();
    all.push(file.0.to_str().unwrap());
    let out = Command::new(tool).args(&all).output().map_err(|e| format!("{tool}: {e}"))?;
    let _ = std::fs::remove_file(&file.0);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {tool} refuses it: {}\n{text}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn tempfile_with(extension: &str) -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("cp-replset-{}.{extension}", uuid::Uuid::now_v7()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

/// mongod cannot run here, but what the agent hands to a shell and to mongosh must at least parse: every
/// shell script with `sh -n` (POSIX sh: the mongo image's `/bin/sh`), every piece of JavaScript with
/// `node --check` (mongosh runs on Node.js). Without node on the machine that half is skipped, loudly.
#[test]
fn every_mongodb_script_parses_in_sh_and_node() {
    for replicas in [1, 3] {
        let mut mi = fixture::instance("mongodb", "7.0", json!({}));
        mi.spec.replicas = replicas;
        let (shell, js) = scripts(&mi);
        assert!(
            shell.len() >= 6,
            "the StatefulSet's two, the replica set's, rotation, backup, restore: {shell:?}"
        );
        assert!(js.len() >= 4, "{js:?}");
        for (what, script) in &shell {
            check("sh", &["-n"], "sh", what, script).unwrap();
        }
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: node is not on this machine, so the JavaScript given to mongosh \
                 ({} pieces) was NOT syntax-checked !!!!!!!!\n",
                js.len()
            );
            continue;
        }
        for (what, script) in &js {
            check("node", &["--check"], "js", what, script).unwrap();
        }
    }
    // The checks can fail: a broken quote is refused by each.
    assert!(check("sh", &["-n"], "sh", "broken", "echo 'unterminated\n").is_err());
    if Command::new("node").arg("--version").output().is_ok() {
        assert!(check("node", &["--check"], "js", "broken", "const a = ;").is_err());
    }
}

/// A scale-down keeps the members' pods until the Job for the new member list has removed them from the
/// configuration: deleting a member first could leave fewer than a majority of its voters, and no
/// primary (MongoDB manual, *replSetReconfig*: one voting member at a time).
#[test]
fn a_scale_down_keeps_the_pods_until_the_members_left_the_configuration() {
    let mut mi = fixture::instance("mongodb", "7.0", json!({}));
    mi.spec.replicas = 1;
    let children = render::render(&mi, None);
    let mut set = children.iter().find(|c| c.kind == ChildKind::StatefulSet).unwrap().clone();
    let running = json!({"spec": {"replicas": 3}});
    replset::hold_scale_down(&mut set, &running, false);
    assert_eq!(set.object["spec"]["replicas"], 3, "held while the Job has not completed");
    replset::hold_scale_down(&mut set, &running, true);
    assert_eq!(set.object["spec"]["replicas"], 3);
    let mut set = children.iter().find(|c| c.kind == ChildKind::StatefulSet).unwrap().clone();
    replset::hold_scale_down(&mut set, &running, true);
    assert_eq!(set.object["spec"]["replicas"], 1, "scaled down once the members left");
    let mut grafana = render::render(&fixture::instance("grafana", "11.6", json!({})), None)
        .into_iter()
        .find(|c| c.kind == ChildKind::StatefulSet)
        .unwrap();
    grafana.object["spec"]["replicas"] = json!(1);
    replset::hold_scale_down(&mut grafana, &running, false);
    assert_eq!(grafana.object["spec"]["replicas"], 1, "only MongoDB's members are held");
}

async fn provision_ha(world: &World, name: &str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let command = InstanceCommand::Provision(ProvisionInstance::new(
        id,
        "acme",
        name,
        ServiceType::Mongodb,
        "7.0",
        "ha",
        "c1",
    ));
    let metadata = CommandMetadata::new(domain::OperationKind::Provision, "test");
    world.commands.execute("acme", id, command, None, metadata).await.expect("provision");
    id
}

/// The Jobs of the replica set named `name` in a view.
fn replset_jobs(view: &View, name: &str) -> Vec<Value> {
    view.names("jobs.batch")
        .iter()
        .filter(|n| n.starts_with(&format!("{name}-replset-")))
        .filter_map(|n| view.get("jobs.batch", n).cloned())
        .collect()
}

fn members_of(name: &str, count: u32) -> Vec<String> {
    (0..count).map(|i| format!("{name}-{i}.{name}.{NAMESPACE}.svc.cluster.local:27017")).collect()
}

/// A MongoDB `ha` instance is a replica set of three members on both backends (on the real API server,
/// the API server accepts every object and its Job controller runs the initiation Job, whose pod kwok
/// completes); the instance is ready only once that Job has completed. Scaling it changes the member list
/// the Job works towards; rotating its password is one Job, against the replica set.
async fn a_mongodb_ha_instance_is_a_replica_set_that_scales_and_rotates_once(backend: Backend) {
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = provision_ha(&world, "mongo").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let view = cluster.view().await;
    let set = view.get("statefulsets.apps", "mongo").unwrap();
    assert_eq!(set["spec"]["replicas"], 3);
    let args = set["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("\"--replSet\",\"rs0\",\"--keyFile\""), "{args}");
    let service = view.get("services", "mongo").unwrap();
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let keyfile = view.get("secrets", "mongo-keyfile").expect("the keyfile Secret");
    let key = keyfile["data"]["keyfile"]
        .as_str()
        .map(|k| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(k).unwrap()).unwrap());
    let key = key.or_else(|| keyfile["stringData"]["keyfile"].as_str().map(str::to_owned)).unwrap();
    assert_eq!(key.len(), 1008);
    let jobs = replset_jobs(&view, "mongo");
    assert_eq!(jobs.len(), 1, "one Job for the member list");
    assert_eq!(job_members(&jobs[0]), members_of("mongo", 3));
    assert_eq!(cluster_agent::render::job::outcome(&jobs[0]), Some(Ok(())), "ready once it completed");

    // Scaled down: the Job for one member, then the set.
    let version =
        world.update(id, UpdateInstance { plan: Some("standard".into()), ..Default::default() }).await;
    cluster.converges("scaled down", |v| v.ready_at("mongo", version)).await;
    let view = cluster.view().await;
    let jobs = replset_jobs(&view, "mongo");
    assert_eq!(jobs.len(), 1, "the Job of the old member list went: {jobs:#?}");
    assert_eq!(job_members(&jobs[0]), members_of("mongo", 1));
    assert_eq!(view.get("statefulsets.apps", "mongo").unwrap()["spec"]["replicas"], 1);
    assert_eq!(
        view.get("secrets", "mongo-keyfile").unwrap()["metadata"]["uid"],
        keyfile["metadata"]["uid"],
        "the key stays"
    );

    // Scaled up again.
    let version = world.update(id, UpdateInstance { plan: Some("ha".into()), ..Default::default() }).await;
    cluster.converges("scaled up", |v| v.ready_at("mongo", version)).await;
    let view = cluster.view().await;
    assert_eq!(job_members(&replset_jobs(&view, "mongo")[0]), members_of("mongo", 3));

    // One rotation Job, against the replica set.
    let generation = world.command(id, InstanceCommand::RotateCredentials).await;
    let rotation = format!("mongo-rotate-{generation}");
    cluster.converges("the rotation Job", |v| v.get("jobs.batch", &rotation).is_some()).await;
    let view = cluster.view().await;
    let rotations: Vec<String> =
        view.names("jobs.batch").into_iter().filter(|n| n.contains("-rotate-")).collect();
    assert_eq!(rotations, std::slice::from_ref(&rotation), "one Job rotates the whole set");
    let job = view.get("jobs.batch", &rotation).unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    let seeds = members_of("mongo", 3).join(",");
    assert!(script.contains(&format!("mongodb://{seeds}/admin?replicaSet=rs0")), "{script}");
    cluster
        .converges("rotated", |v| {
            v.managed_instance("mongo").is_some_and(|mi| mi["status"]["applied"]["credentials"] == generation)
        })
        .await;
    cluster.assert_permitted();
}
on_both_backends!(a_mongodb_ha_instance_is_a_replica_set_that_scales_and_rotates_once);

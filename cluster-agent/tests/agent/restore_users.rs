//! What a restore does to the instance's users: the dump's users never replace the instance's, and the
//! instance's own password works again afterwards. No backend runs mongod or Grafana, so each test states
//! the upstream behaviour it encodes and checks the rendered objects against it.

use crate::fixture;

use cluster_agent::{
    crd::{AspectGenerations, ManagedInstance, RestoreTarget},
    render::{self, ChildKind},
};
use serde_json::{Value, json};

fn restoring(service: &str, version: &str) -> ManagedInstance {
    let mut mi = fixture::instance(service, version, json!({}));
    mi.spec.restore = Some(RestoreTarget {
        backup_id: "0193a0b0-0000-7000-8000-0000000000b1".into(),
        location: "acme/orders/b1".into(),
        target_time: None,
    });
    mi.spec.aspects = Some(AspectGenerations { restore: 6, ..mi.spec.aspect_generations() });
    mi
}

fn script(container: &Value) -> &str {
    container["command"][2].as_str().expect("a shell script")
}

/// A MongoDB restore is one point in time: `mongorestore --oplogReplay` applies the oplog the dump
/// captured (mongodb/mongo-tools 100.13.0 mongorestore/options.go). It refuses any `--nsExclude`
/// (mongorestore/mongorestore.go: "cannot use --oplogReplay with excludes specified"), so the dump's users
/// come back as they were, root's password of then included, and a restore signed in as root could be
/// locked out by them ("leaving an empty database": Database Tools docs, mongorestore `--drop`); replaying
/// the oplog also takes `anyAction`, which `root` lacks (*Required Access*). So the restore signs in as
/// the set's internal user with the keyfile, then sets root's password to the instance's again and
/// checks a fresh sign-in with it: a restore that lost it fails instead of succeeding. A backup made
/// before instances were replica sets has no oplog ("no oplog file to replay") and is restored without.
#[test]
fn a_mongodb_restore_replays_the_oplog_as_the_set_s_internal_user_and_sets_the_password_again() {
    let job = render::backup::restore_job(&restoring("mongodb", "7.0"), 6, "acme/orders/b1").expect("a Job");
    let container = &job.object["spec"]["template"]["spec"]["containers"][0];
    let script = script(container);
    let restore = script.lines().find(|l| l.contains("mongorestore")).expect("mongorestore");
    assert!(restore.contains("--drop"), "{restore}");
    assert!(!restore.contains("--nsExclude"), "mongorestore refuses excludes with --oplogReplay: {restore}");
    assert!(script.contains("restore --oplogReplay"), "the oplog is replayed: {script}");
    assert!(restore.contains("replicaSet=rs0"), "restored through the set's primary: {restore}");
    assert!(
        restore.contains("--username __system --authenticationDatabase local"),
        "signed in with the keyfile, which no restored user can lock out: {restore}"
    );
    assert!(script.contains("\"$KEYFILE\" > /tmp/mongo-tools.yaml"), "the keyfile is the password: {script}");
    assert!(script.contains("grep -q 'no oplog file to replay'"), "older backups: {script}");
    let lines: Vec<&str> = script.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("restore")).unwrap();
    let after = lines[at..].join("\n");
    assert!(
        after.contains("changeUserPassword(\"root\", process.env.PASSWORD)")
            && after.contains(".auth(\"root\", process.env.PASSWORD)"),
        "after the restore the instance's own password is set and checked: {after}"
    );
    let env = |name: &str| {
        container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_default()
    };
    assert_eq!(
        env("PASSWORD")["valueFrom"]["secretKeyRef"]["key"],
        "password",
        "the instance's current password"
    );
    assert_eq!(env("KEYFILE")["valueFrom"]["secretKeyRef"]["name"], "orders-keyfile", "the set's keyfile");
}

/// Grafana keeps its users in its database (`grafana.db`), so a restored database brings back the
/// backup's admin password, and `GF_SECURITY_ADMIN_PASSWORD` is read only when Grafana creates the admin
/// (grafana/grafana conf/defaults.ini `[security] admin_password`: "default admin password, can be
/// changed before first start of grafana"). After the restore init container, Grafana's own CLI sets
/// the instance's password again (`grafana cli admin reset-admin-password --password-from-stdin`,
/// grafana/grafana v11.6.0 pkg/cmd/grafana-cli/commands/commands.go), before Grafana starts.
#[test]
fn a_grafana_restore_sets_the_instance_s_admin_password_again_before_grafana_starts() {
    let children = render::render(&restoring("grafana", "11.6"), None);
    let set = &children.iter().find(|c| c.kind == ChildKind::StatefulSet).unwrap().object;
    let pod = &set["spec"]["template"]["spec"];
    let init: Vec<&Value> = pod["initContainers"].as_array().expect("init containers").iter().collect();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["restore", "reset-admin-password"],
        "the password is set after the database is replaced"
    );
    let reset = init[1];
    let main = &pod["containers"][0];
    assert_eq!(reset["image"], main["image"], "Grafana's own CLI");
    assert!(
        script(reset).contains("grafana cli")
            && script(reset).contains("admin reset-admin-password --password-from-stdin"),
        "{}",
        script(reset)
    );
    assert!(script(reset).contains("| grafana cli"), "the password comes on stdin: {}", script(reset));
    let password =
        reset["env"].as_array().unwrap().iter().find(|e| e["name"] == "GF_SECURITY_ADMIN_PASSWORD");
    assert_eq!(password.unwrap()["valueFrom"]["secretKeyRef"]["key"], "password");
    for mount in ["/var/lib/grafana", "/etc/cp-grafana"] {
        assert!(
            reset["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == mount),
            "it reads the config and writes the database: {mount}"
        );
    }
    // An instance never restored has no such step.
    let plain = render::render(&fixture::instance("grafana", "11.6", json!({})), None);
    let set = &plain.iter().find(|c| c.kind == ChildKind::StatefulSet).unwrap().object;
    assert!(set["spec"]["template"]["spec"].get("initContainers").is_none());
}

/// InfluxDB: `influx restore --full` would replace the instance's users and tokens with the backup's and
/// needs the backup's operator token to put the instance's password back, which then had to be kept in
/// clear beside the dump. A restore without `--full` restores buckets only (influx-cli
/// clients/restore/restore.go `partialRestore`), into buckets that must not exist (InfluxDB docs,
/// "Restore data"): the instance's own token deletes its org's buckets but the system ones, then
/// restores. So no token is written with the dump, and the instance's password never changes.
#[test]
fn an_influxdb_restore_keeps_the_instance_s_users_and_no_token_is_kept_with_the_dump() {
    let mi = restoring("influxdb", "2.7");
    let backup = render::backup::job(&mi, uuid::Uuid::nil(), "acme/orders/b1").expect("a backup Job");
    let dump = script(&backup.object["spec"]["template"]["spec"]["initContainers"][0]);
    let writes: Vec<&str> =
        dump.lines().filter(|l| l.contains("> /backup") || l.contains(">/backup")).collect();
    assert!(writes.is_empty(), "nothing but the dump goes into the artifact: {writes:?}");
    assert!(!dump.contains("cp-operator-token"), "{dump}");

    let job = render::backup::restore_job(&mi, 6, "acme/orders/b1").expect("a restore Job");
    let restore = script(&job.object["spec"]["template"]["spec"]["containers"][0]);
    let line = restore.lines().find(|l| l.starts_with("influx restore")).expect("influx restore");
    assert!(!line.contains("--full"), "a full restore replaces the instance's users and tokens: {line}");
    assert!(!restore.contains("cp-operator-token"), "{restore}");
    let lines: Vec<&str> = restore.lines().collect();
    let restored_at = lines.iter().position(|l| l.starts_with("influx restore")).unwrap();
    let deleted_at = lines.iter().position(|l| l.contains("influx bucket delete")).expect("buckets deleted");
    assert!(deleted_at < restored_at, "buckets are deleted before the restore recreates them");
    assert!(lines[restored_at + 1..].iter().all(|l| l.trim().is_empty()), "nothing after: {restore}");

    // The bucket listing is parsed by awk as influx-cli prints it: columns padded with tabs
    // (pkg/tabwriter, `tabwriter.NewWriter(w, 0, 8, 1, '\t', 0)`), ID first, then the name.
    let list = lines.iter().find(|l| l.starts_with("influx bucket list")).unwrap();
    assert!(list.ends_with("> /tmp/bucket-list"), "the listing goes to a file first: {list}");
    let parse = lines.iter().find(|l| l.starts_with("awk ") && l.contains("/tmp/bucket-list")).unwrap();
    let program = parse.split(" /tmp/bucket-list").next().unwrap();
    let table = "0a1b2c3d4e5f6a7b\tdefault\t\tinfinite\t168h0m0s\t\t0f0e0d0c0b0a0908\timplicit\n\
                 1a1b2c3d4e5f6a7b\t_monitoring\t\t168h0m0s\t24h0m0s\t\t0f0e0d0c0b0a0908\timplicit\n\
                 2a1b2c3d4e5f6a7b\t_tasks\t\t\t72h0m0s\t24h0m0s\t\t0f0e0d0c0b0a0908\timplicit\n\
                 3a1b2c3d4e5f6a7b\tsensor data 2026\tinfinite\t168h0m0s\t0f0e0d0c0b0a0908\timplicit\n";
    let mut awk = std::process::Command::new("sh")
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run awk");
    std::io::Write::write_all(awk.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    let out = awk.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "0a1b2c3d4e5f6a7b\n3a1b2c3d4e5f6a7b\n", "{program}");
    for script in [dump, restore] {
        let checked = std::process::Command::new("sh").args(["-n", "-c", script]).status().unwrap();
        assert!(checked.success(), "not valid sh: {script}");
    }
}

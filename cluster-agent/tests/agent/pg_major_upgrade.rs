//! A PostgreSQL major upgrade (15 → 18) on the real API server, played with the real programs: the
//! stand-in for CloudNativePG runs `pg_upgrade --link` as CloudNativePG's upgrade Job does
//! (`kubeenv::barman::major_upgrade`), so the rows are PostgreSQL's own after the upgrade, and the new
//! major archives under the server name the domain gave it while the old major's backups stay where they
//! were. A backup of the old major is no source for the new one: the domain refuses it, and PostgreSQL 18
//! itself would not start on it.

use crate::common;

use std::time::Duration;

use common::*;
use domain::{ProvisionInstance, ServiceType, UpdateInstance, instance::restore::RestoreSource};
use uuid::Uuid;

use crate::barman::{outcome, rows};

#[tokio::test]
async fn a_major_upgrade_keeps_the_rows_archives_under_a_new_server_name_and_leaves_the_old_backups() {
    let s3 = testkit::S3Server::start();
    let mut world = World::without_agents(Backend::Real, &["c1"], Duration::from_millis(50)).await;
    world.send_backups_to(&s3).await;
    world.start_agent(0).await;
    let id = world.provision("c1", "ledger", ServiceType::Postgresql, "15").await;
    let cluster = &world.clusters[0];
    cluster.converges("the instance ready", |v| v.ready_at("ledger", 1)).await;
    let Kube::Real { plane, admin } = &cluster.kube else { unreachable!("the real API server") };
    let old = plane.postgres().ensure(admin, "cp-acme", "ledger").await.expect("its PostgreSQL");
    assert_eq!(old.major, "15");
    old.sql("create table ledger (n int primary key)").unwrap();
    old.sql("insert into ledger (n) values (1)").unwrap();

    let mut observed =
        world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.expect("subscribe");
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let before = request_backup(&backups, id, "ledger", ServiceType::Postgresql, "15").await;
    let reported = outcome(&mut observed, before).await;
    assert_eq!(reported["event"]["type"], "BackupCompleted", "{reported}");
    let old_location = reported["event"]["data"]["location"].as_str().unwrap().to_owned();
    assert!(old_location.starts_with(&format!("acme/{id}/ledger/base/")), "{old_location}");

    // The upgrade: the domain names the new archive server; the stand-in runs pg_upgrade for real.
    let generation =
        world.update(id, UpdateInstance { version: Some("18".into()), ..Default::default() }).await;
    // A stop, an initdb, pg_upgrade (which starts both majors in turn) and a start: more than a
    // converge takes on a loaded machine, so the same bound as the fork's recovery.
    let upgraded = cluster.wait_until(CONVERGE * 3, |v| v.ready_at("ledger", generation)).await;
    assert_eq!(plane.postgres().failure("cp-acme", "ledger"), None, "the upgrade failed");
    assert!(upgraded, "the upgrade not applied within {:?}", CONVERGE * 3);
    let new = plane.postgres().get("cp-acme", "ledger").expect("the upgraded PostgreSQL");
    assert_eq!(new.major, "18");
    assert!(new.sql("select version()").unwrap().starts_with("PostgreSQL 18"), "running 18");
    assert_eq!(rows(&new), ["1"], "pg_upgrade kept the rows");
    assert_eq!(new.destination.server, "ledger-pg18", "the server name the domain gave the new major");
    new.sql("insert into ledger (n) values (2)").unwrap();

    // A backup after it: under the new server name, of major 18 in Barman's catalogue; the old major's
    // backup is still in its own catalogue, untouched.
    let after = request_backup(&backups, id, "ledger", ServiceType::Postgresql, "18").await;
    let reported = outcome(&mut observed, after).await;
    assert_eq!(reported["event"]["type"], "BackupCompleted", "{reported}");
    let location = reported["event"]["data"]["location"].as_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("acme/{id}/ledger-pg18/base/")), "{location}");
    let barman_id = location.rsplit('/').next().unwrap();
    let catalogue = new.destination.catalogue().expect("the new major's catalogue");
    let record = catalogue.iter().find(|b| b["backup_id"] == barman_id).expect("Barman has the new backup");
    assert_eq!(record["version"].as_u64().map(|v| v / 10_000), Some(18), "{record}");
    let old_catalogue = old.destination.catalogue().expect("the old major's catalogue");
    let old_id = old_location.rsplit('/').next().unwrap();
    assert_eq!(
        old_catalogue.iter().map(|b| b["backup_id"].as_str().unwrap()).collect::<Vec<_>>(),
        [old_id],
        "the old major's archive keeps its backup and gains none"
    );

    // The old major's backup is no source for an instance of the new one: the domain refuses the fork.
    let fork = Uuid::now_v7();
    let mut provision =
        ProvisionInstance::new(fork, "acme", "ledger-fork", ServiceType::Postgresql, "18", "starter", "c1");
    provision.restore = Some(RestoreSource {
        backup_id: before,
        instance_id: id,
        service: ServiceType::Postgresql,
        version: "15".into(),
        location: Some(old_location.clone()),
        unusable: None,
        point_in_time: None,
    });
    let refused = world.provision_as_asked(provision).await.expect_err("a fork of a 15 backup into 18");
    let refused = refused.to_string();
    assert!(
        refused.starts_with("/version:") && refused.contains("starts only on its own major"),
        "{refused}"
    );

    // And PostgreSQL 18 itself would not start on it: Barman restores the 15 base backup, 18 refuses it.
    let restored = std::env::temp_dir().join(format!("cp-pg15-restore-{}", Uuid::now_v7()));
    let target = restored.join("data");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::set_permissions(&restored, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    old.destination.barman("barman-cloud-restore", &[], &[old_id, &target.display().to_string()]).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let pg18 = kubeenv::barman::postgres_dir("18").unwrap().join("postgres");
    let mut start = if root() {
        let _ = std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&target).status();
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&pg18);
        command
    } else {
        std::process::Command::new(&pg18)
    };
    let output = start
        .arg("-D")
        .arg(&target)
        .args(["-c", "listen_addresses=", "-c"])
        .arg(format!("unix_socket_directories={}", restored.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&restored);
    assert!(
        !output.status.success() && said.contains("database files are incompatible with server"),
        "{said}"
    );
    cluster.assert_permitted();
}

fn root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

//! PostgreSQL backups and point-in-time recovery made by the real programs, on the real API server: the
//! stand-in for CloudNativePG and its Barman Cloud plugin (`kubeenv::barman`) runs a real PostgreSQL per
//! Cluster that archives its WAL with `barman-cloud-wal-archive`, takes each `Backup` with
//! `barman-cloud-backup`, and bootstraps a fork with `barman-cloud-restore` and WAL replay to its target
//! time. What the agent reports is checked against Barman's own catalogue, and the fork's rows are read
//! back from the PostgreSQL that recovered them.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use domain::{
    ProvisionInstance, ServiceType,
    instance::restore::{PointInTime, RestoreSource},
};
use uuid::Uuid;

/// The PostgreSQL major the machine has (Debian 12's `postgresql` is 15); CloudNativePG's image for it.
const MAJOR: &str = "15";

/// The backup's outcome as the agent reported it (`BackupCompleted` or `BackupFailed`), within `CONVERGE`.
pub(crate) async fn outcome(observed: &mut async_nats::Subscriber, backup_id: Uuid) -> serde_json::Value {
    use futures::StreamExt as _;
    let deadline = tokio::time::Instant::now() + CONVERGE * 3;
    loop {
        let message = tokio::time::timeout_at(deadline, observed.next())
            .await
            .unwrap_or_else(|_| panic!("no outcome of backup {backup_id} within {:?}", CONVERGE * 3))
            .expect("subscription open");
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let kind = event["event"]["type"].as_str().unwrap_or_default();
        if ["BackupCompleted", "BackupFailed"].contains(&kind)
            && event["event"]["data"]["backup_id"] == backup_id.to_string()
        {
            return event;
        }
    }
}

pub(crate) fn rows(server: &kubeenv::barman::Server) -> Vec<String> {
    server.sql("select n from ledger order by n").expect("read the rows").lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_postgresql_fork_recovers_exactly_the_rows_before_its_target_from_barman_s_own_backup_and_wal() {
    let s3 = testkit::S3Server::start();
    let mut world = World::without_agents(Backend::Real, &["c1"], Duration::from_millis(50)).await;
    world.send_backups_to(&s3).await;
    world.start_agent(0).await;
    let id = world.provision("c1", "ledger", ServiceType::Postgresql, MAJOR).await;
    let cluster = &world.clusters[0];
    cluster.converges("the instance ready", |v| v.ready_at("ledger", 1)).await;
    let Kube::Real { plane, admin } = &cluster.kube else { unreachable!("the real API server") };
    let ledger = plane.postgres().ensure(admin, "cp-acme", "ledger").await.expect("its PostgreSQL");
    assert_eq!(ledger.major, MAJOR);
    ledger.sql("create table ledger (n int primary key, at timestamptz default clock_timestamp())").unwrap();
    ledger.sql("insert into ledger (n) values (1)").unwrap();

    // The base backup: Barman's, named in Barman's catalogue as the agent reported it.
    let mut observed =
        world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.expect("subscribe");
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let backup_id = request_backup(&backups, id, "ledger", ServiceType::Postgresql, MAJOR).await;
    let reported = outcome(&mut observed, backup_id).await;
    assert_eq!(reported["event"]["type"], "BackupCompleted", "{reported}");
    let location = reported["event"]["data"]["location"].as_str().unwrap().to_owned();
    let barman_id = location.rsplit('/').next().unwrap().to_owned();
    assert!(location.starts_with(&format!("acme/{id}/ledger/base/")), "{location}");
    let catalogue = ledger.destination.catalogue().expect("Barman's catalogue");
    let record = catalogue.iter().find(|b| b["backup_id"] == barman_id.as_str()).unwrap_or_else(|| {
        panic!("the reported base backup {barman_id} is not in Barman's catalogue: {catalogue:?}")
    });
    assert_eq!(record["status"], "DONE", "{record}");
    assert_eq!(record["version"].as_u64().map(|v| v / 10_000), Some(15), "{record}");
    let store = backup_store::BackupStore::new(&world.store_admin.as_ref().unwrap().0).unwrap();
    let objects = store.list(&location).await.unwrap();
    let names: Vec<&str> = objects.iter().map(|o| o.key.rsplit('/').next().unwrap()).collect();
    assert!(names.contains(&"backup.info") && names.contains(&"data.tar"), "Barman's layout: {names:?}");
    // The control plane's check (`backup_store::barman`) reads Barman's real backup.info and WAL archive.
    let size = reported["event"]["data"]["size_bytes"].as_u64().expect("a size");
    assert_eq!(
        store.verify_base_backup(&location, size).await.unwrap(),
        backup_store::Verification::Matches,
        "Barman's catalogue and WAL archive back the report"
    );

    // Rows after it: one before the target time, one after; then a second base backup, whose end
    // (`pg_backup_stop` waits for its WAL to be archived) puts both rows' WAL in the store: the target
    // lies inside the window the API states (from the first backup's end to the newest one's).
    ledger.sql("insert into ledger (n) values (2)").unwrap();
    let clock = |server: &kubeenv::barman::Server| -> DateTime<Utc> {
        let sql = "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
        server.sql(sql).expect("the server's clock").trim().parse().expect("a time")
    };
    // The target: a millisecond after row 2 committed, on the server's clock; row 3 commits after it.
    let target = clock(&ledger) + chrono::TimeDelta::milliseconds(1);
    while clock(&ledger) <= target {}
    ledger.sql("insert into ledger (n) values (3)").unwrap();
    let second = request_backup(&backups, id, "ledger", ServiceType::Postgresql, MAJOR).await;
    let reported = outcome(&mut observed, second).await;
    assert_eq!(reported["event"]["type"], "BackupCompleted", "{reported}");
    assert_eq!(rows(&ledger), ["1", "2", "3"]);

    // The fork, as the API asks for it (the window from the base backup's end to now).
    let fork = Uuid::now_v7();
    let mut provision =
        ProvisionInstance::new(fork, "acme", "ledger-fork", ServiceType::Postgresql, MAJOR, "starter", "c1");
    provision.restore = Some(RestoreSource {
        backup_id,
        instance_id: id,
        service: ServiceType::Postgresql,
        version: MAJOR.into(),
        location: Some(location.clone()),
        unusable: None,
        point_in_time: Some(PointInTime {
            at: target,
            window: Some((target - chrono::TimeDelta::hours(1), Utc::now())),
        }),
    });
    world.provision_as_asked(provision).await.expect("the fork provisioned");
    let recovered = async {
        let deadline = tokio::time::Instant::now() + CONVERGE * 3;
        loop {
            if let Some(server) = plane.postgres().get("cp-acme", "ledger-fork") {
                return server;
            }
            if let Some(why) = plane.postgres().failure("cp-acme", "ledger-fork") {
                panic!("the fork's recovery failed: {why}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fork never recovered within {:?}",
                CONVERGE * 3
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    assert_eq!(rows(&recovered), ["1", "2"], "exactly the rows committed before {target}");
    cluster.converges("the fork ready", |v| v.phase("ledger-fork").as_deref() == Some("Ready")).await;
    cluster.assert_permitted();
}

/// After an upgrade to another major the Cluster archives under a server name of its own, so the new
/// system's timeline-1 WAL cannot overwrite the old major's (CloudNativePG `docs/src/postgres_upgrades.md`);
/// before one, under the plugin's default, the Cluster's name (no parameter: instances keep their archive).
#[test]
fn a_major_upgrade_archives_under_a_server_name_of_its_own() {
    use cluster_agent::render;
    let store =
        render::backup::StoreTarget { endpoint: "http://store:8333".into(), bucket: "cp-backups".into() };
    let server_of = |mi: &cluster_agent::crd::ManagedInstance| {
        let children = render::render(mi, Some(&store));
        let cluster =
            children.iter().find(|c| c.object["kind"] == "Cluster").expect("its Cluster").object.clone();
        cluster["spec"]["plugins"][0]["parameters"]["serverName"].as_str().map(str::to_owned)
    };
    let mut mi = crate::fixture::instance("postgresql", "16", serde_json::json!({}));
    assert_eq!(server_of(&mi), None, "the plugin's default: the Cluster's name");
    // What the domain records on VersionUpgraded 16 → 17, and the mirror carries.
    mi.spec.version = "17".into();
    mi.spec.archive_server = domain::instance::archive_server_after_upgrade("orders", "16", "17");
    assert_eq!(server_of(&mi).as_deref(), Some("orders-pg17"));
    assert_eq!(
        domain::instance::archive_server_after_upgrade("orders", "16", "16.4"),
        None,
        "a minor keeps it"
    );
}

//! PostgreSQL backups through CloudNativePG's Barman Cloud plugin, on both backends: with a backup store,
//! an instance's Cluster archives to its own `ObjectStore` (accepted by the plugin's CRD schema on the real
//! API server), and a backup is a CloudNativePG `Backup` whose base backup lands in a real S3 store.

use crate::common;

use std::time::Duration;

use common::*;
use domain::ServiceType;

async fn a_postgresql_backup_is_a_base_backup_in_the_instance_s_object_store(backend: Backend) {
    let s3 = testkit::S3Server::start();
    let mut world = World::without_agents(backend, &["c1"], Duration::from_millis(50)).await;
    world.send_backups_to(&s3).await;
    world.start_agent(0).await;
    let id = world.provision("c1", "ledger", ServiceType::Postgresql, "15").await;
    let cluster = &world.clusters[0];
    cluster.converges("the instance ready", |v| v.ready_at("ledger", 1)).await;
    let view = cluster.view().await;
    let store = view.get("objectstores.barmancloud.cnpg.io", "ledger-backups").expect("its ObjectStore");
    assert_eq!(
        store["spec"]["configuration"]["destinationPath"],
        format!("s3://{}/acme/{id}", testkit::s3::BACKUP_BUCKET)
    );
    let postgres = view.get("clusters.postgresql.cnpg.io", "ledger").expect("its Cluster");
    assert_eq!(postgres["spec"]["plugins"][0]["parameters"]["barmanObjectName"], "ledger-backups");
    assert_eq!(postgres["spec"]["plugins"][0]["isWALArchiver"], true);
    // The instance's own keys, not the control plane's, reach the cluster as its store Secret.
    let secret = view.get("secrets", "ledger-backup-store").expect("the keys reach the cluster as a Secret");
    let key_id = secret_item(secret, "access-key-id");
    assert_ne!(key_id, s3.access_key(), "the cluster holds the control plane's own keys");
    assert_eq!(secret["metadata"]["labels"]["cp.example.com/instance-id"], id.to_string(), "{secret}");

    let mut observed =
        world.nats.subscribe(streams::instances::observed_cluster_filter("c1")).await.expect("subscribe");
    let backups = streams::backups::BackupCommands::new(&world.topology, 100);
    let backup_id = request_backup(&backups, id, "ledger", ServiceType::Postgresql, "15").await;
    // The outcome, whichever it is: a failure shows its reason.
    let outcome = loop {
        use futures::StreamExt as _;
        let Ok(message) = tokio::time::timeout(CONVERGE, observed.next()).await else {
            let view = cluster.view().await;
            let made: Vec<_> = view
                .names("backups.postgresql.cnpg.io")
                .iter()
                .map(|n| view.get("backups.postgresql.cnpg.io", n).cloned())
                .collect();
            panic!(
                "no backup outcome within {CONVERGE:?}; Backups: {made:?}; requests: {:?}",
                cluster.requests.counts()
            );
        };
        let message = message.expect("subscription open");
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        if ["BackupCompleted", "BackupFailed"].contains(&event["event"]["type"].as_str().unwrap_or_default())
        {
            break event;
        }
    };
    assert_eq!(outcome["event"]["type"], "BackupCompleted", "{outcome}");
    let data = &outcome["event"]["data"];
    let location = data["location"].as_str().expect("a location");
    assert!(location.starts_with(&format!("acme/{id}/ledger/base/")), "{location}");
    assert!(data["sha256"].is_null(), "CloudNativePG reports no checksum: {data}");
    let size = data["size_bytes"].as_u64().expect("a size");
    let client = backup_store::BackupStore::new(&world.store_admin.as_ref().unwrap().0).unwrap();
    assert_eq!(
        client.verify_prefix(location, size).await.unwrap(),
        backup_store::Verification::Matches,
        "the base backup's objects total the reported size"
    );
    let view = cluster.view().await;
    let made = view.get("backups.postgresql.cnpg.io", &cluster_agent::render::barman::backup_name(backup_id));
    assert_eq!(made.map(|b| b["spec"]["method"].clone()), Some(serde_json::json!("plugin")));
    cluster.assert_permitted();
}
on_both_backends!(a_postgresql_backup_is_a_base_backup_in_the_instance_s_object_store);

/// An item of a Secret as the cluster returns it (`data`, base64) or as written (`stringData`).
fn secret_item(secret: &serde_json::Value, key: &str) -> String {
    use base64::Engine as _;
    if let Some(plain) = secret["stringData"][key].as_str() {
        return plain.to_owned();
    }
    let encoded = secret["data"][key].as_str().unwrap_or_else(|| panic!("no {key} in {secret}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64"))
        .expect("utf-8")
}

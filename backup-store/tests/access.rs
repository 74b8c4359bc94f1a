//! Keys per instance against a real S3 server (SeaweedFS with its IAM API): what an instance's keys
//! reach, and what they do not.

use backup_store::{
    BackupStore, StoreConfig,
    access::{AccessAdmin, Grant, InstanceKeys},
    object_key,
};
use sha2::Digest as _;
use testkit::{S3Server, s3::BACKUP_BUCKET};
use uuid::Uuid;

fn admin_config(server: &S3Server) -> StoreConfig {
    StoreConfig {
        endpoint: server.endpoint(),
        bucket: BACKUP_BUCKET.to_owned(),
        region: "us-east-1".to_owned(),
        access_key_id: server.access_key().to_owned(),
        secret_access_key: server.secret_key().to_owned(),
    }
}

fn as_keys(server: &S3Server, keys: &InstanceKeys) -> BackupStore {
    BackupStore::new(&StoreConfig {
        access_key_id: keys.access_key_id.clone(),
        secret_access_key: keys.secret_access_key.clone(),
        ..admin_config(server)
    })
    .unwrap()
}

#[tokio::test]
async fn an_instance_s_keys_reach_its_own_backups_and_a_restore_source_read_only_and_nothing_else() {
    let server = S3Server::start();
    let admin_store = BackupStore::new(&admin_config(&server)).unwrap();
    let admin = AccessAdmin::new(&admin_config(&server)).unwrap();
    let (source, target, stranger) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let source_key = object_key("acme", source, Uuid::now_v7());
    let stranger_key = object_key("globex", stranger, Uuid::now_v7());
    admin_store.put(&source_key, b"source dump".to_vec()).await.unwrap();
    admin_store.put(&stranger_key, b"another tenant's dump".to_vec()).await.unwrap();

    let grant = Grant { own: format!("acme/{target}"), read: vec![format!("acme/{source}")] };
    admin.grant(target, &grant).await.unwrap();
    let keys = admin.issue_keys(target, &grant).await.unwrap();
    let store = as_keys(&server, &keys);

    // Its own prefix: write, list, read, delete.
    let own_key = object_key("acme", target, Uuid::now_v7());
    store.put(&own_key, b"own dump".to_vec()).await.expect("an instance writes its own backups");
    assert_eq!(store.list(&format!("acme/{target}/")).await.unwrap().len(), 1);
    // The restore source: read and list, never write or delete.
    assert_eq!(store.list(&format!("acme/{source}/")).await.unwrap().len(), 1, "the source is listable");
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    assert_eq!(
        store.verify(&source_key, 11, &sha(b"source dump")).await.unwrap(),
        backup_store::Verification::Matches
    );
    store
        .put(&object_key("acme", source, Uuid::now_v7()), b"x".to_vec())
        .await
        .expect_err("source is read-only");
    store.delete(&source_key).await.expect_err("source is read-only");
    // Another tenant's backups and the bucket as a whole: nothing.
    store.list(&format!("globex/{stranger}/")).await.expect_err("another tenant's backups are not listable");
    store.list("").await.expect_err("the bucket is not listable");
    store.verify(&stranger_key, 21, &sha(b"another tenant's dump")).await.expect_err("nor readable");
    store.delete(&stranger_key).await.expect_err("nor deletable");
    store.delete_prefix(&format!("globex/{stranger}/x")).await.expect_err("nor deletable by prefix");
    assert_eq!(admin_store.list(&format!("globex/{stranger}/")).await.unwrap().len(), 1, "untouched");

    // Without the restore, the source is out of reach too.
    let own_only = Grant { own: grant.own.clone(), read: vec![] };
    admin.grant(target, &own_only).await.unwrap();
    let later = admin.issue_keys(target, &own_only).await.unwrap();
    as_keys(&server, &later).list(&format!("acme/{source}/")).await.expect_err("the grant was withdrawn");
}

/// How long a deleted key may keep working: the S3 servers reload identities from the filer.
const REVOCATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (bounded) until `store`'s key is refused listing `prefix`.
async fn refused_soon(store: &BackupStore, prefix: &str, what: &str) {
    let started = std::time::Instant::now();
    while store.list(prefix).await.is_ok() {
        assert!(
            started.elapsed() < REVOCATION_TIMEOUT,
            "{what}: still accepted after {REVOCATION_TIMEOUT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("{what}: refused after {:?}", started.elapsed());
}

#[tokio::test]
async fn keys_are_rotated_two_at_a_time_and_revoked_with_the_identity() {
    let server = S3Server::start();
    let admin = AccessAdmin::new(&admin_config(&server)).unwrap();
    let instance = Uuid::now_v7();
    let grant = Grant { own: format!("acme/{instance}"), read: vec![] };
    admin.grant(instance, &grant).await.unwrap();
    admin.grant(instance, &grant).await.expect("granting again changes nothing");
    let first = admin.issue_keys(instance, &grant).await.unwrap();
    let second = admin.issue_keys(instance, &grant).await.unwrap();
    let third = admin.issue_keys(instance, &grant).await.unwrap();
    let prefix = format!("acme/{instance}/");
    // The previous key keeps working (pods started with it finish); the one before is gone.
    as_keys(&server, &second).list(&prefix).await.expect("the previous key still works");
    as_keys(&server, &third).list(&prefix).await.expect("the new key works");
    refused_soon(&as_keys(&server, &first), &prefix, "the key before the previous one is deleted").await;
    assert_eq!(admin.instances_with_access().await.unwrap(), vec![instance]);

    admin.revoke(instance).await.unwrap();
    admin.revoke(instance).await.expect("revoking again changes nothing");
    refused_soon(&as_keys(&server, &third), &prefix, "a revoked instance's keys reach nothing").await;
    assert!(admin.instances_with_access().await.unwrap().is_empty());
}

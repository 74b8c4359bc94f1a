//! The backup store against a real S3 server (SeaweedFS): what the control plane does with objects.

use backup_store::{BackupStore, StoreConfig, Verification, object_key};
use testkit::{S3Server, s3::BACKUP_BUCKET};
use uuid::Uuid;

fn config(server: &S3Server) -> StoreConfig {
    StoreConfig {
        endpoint: server.endpoint(),
        bucket: BACKUP_BUCKET.to_owned(),
        region: "us-east-1".to_owned(),
        access_key_id: server.access_key().to_owned(),
        secret_access_key: server.secret_key().to_owned(),
    }
}

#[tokio::test]
async fn an_object_is_verified_listed_and_deleted_and_every_mismatch_is_named() {
    let server = S3Server::start();
    let store = BackupStore::new(&config(&server)).unwrap();
    let instance = Uuid::now_v7();
    let key = object_key("acme", instance, Uuid::now_v7());
    let content = b"-- a dump\n".repeat(10_000);
    let (size, sha256) = store.put(&key, content.clone()).await.unwrap();
    assert_eq!(size, content.len() as u64);

    assert_eq!(store.verify(&key, size, &sha256).await.unwrap(), Verification::Matches);
    assert_eq!(
        store.verify(&key, size + 1, &sha256).await.unwrap(),
        Verification::SizeDiffers { found: size }
    );
    let wrong = "0".repeat(64);
    assert_eq!(
        store.verify(&key, size, &wrong).await.unwrap(),
        Verification::ChecksumDiffers { found: sha256.clone() }
    );
    let absent = object_key("acme", instance, Uuid::now_v7());
    assert_eq!(store.verify(&absent, size, &sha256).await.unwrap(), Verification::Missing);

    let listed = store.list(&format!("acme/{instance}")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), (key.as_str(), size));

    store.delete(&key).await.unwrap();
    assert_eq!(store.verify(&key, size, &sha256).await.unwrap(), Verification::Missing);
    store.delete(&key).await.unwrap();
    assert!(store.list(&format!("acme/{instance}")).await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_refused_by_the_store() {
    let server = S3Server::start();
    let mut wrong = config(&server);
    wrong.secret_access_key = "not-the-key".to_owned();
    let store = BackupStore::new(&wrong).unwrap();
    let refused = store.put("acme/x/y", b"data".to_vec()).await;
    assert!(refused.is_err(), "the store must check credentials");
}

//! A real S3 backup store for end-to-end tests: the server, where agents send backups, and the control
//! plane's client of it.

use backup_store::{BackupStore, StoreConfig};
use cluster_agent::render::backup::StoreTarget;
use testkit::{S3Server, s3::BACKUP_BUCKET};

/// A SeaweedFS S3 server with the backup bucket, stopped on drop.
#[derive(Debug)]
pub struct BackupStoreRig {
    /// the server
    pub s3: S3Server,
}

impl BackupStoreRig {
    /// Starts the server.
    pub fn start() -> Self {
        Self { s3: S3Server::start() }
    }

    /// Where a cluster's agent sends backups.
    pub fn target(&self) -> StoreTarget {
        StoreTarget {
            endpoint: self.s3.endpoint(),
            bucket: BACKUP_BUCKET.to_owned(),
            access_key_id: self.s3.access_key().to_owned(),
            secret_access_key: self.s3.secret_key().to_owned(),
        }
    }

    /// The control plane's client of the bucket.
    pub fn store(&self) -> BackupStore {
        BackupStore::new(&StoreConfig {
            endpoint: self.s3.endpoint(),
            bucket: BACKUP_BUCKET.to_owned(),
            region: "us-east-1".into(),
            access_key_id: self.s3.access_key().to_owned(),
            secret_access_key: self.s3.secret_key().to_owned(),
        })
        .expect("a client of the test store")
    }
}

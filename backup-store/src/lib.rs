//! The object store backups land in (any S3-compatible store; SeaweedFS in the local stack and tests):
//! where a backup's object lives, and what the control plane does with objects itself — verify that an
//! object the cluster reported is there with the reported size and checksum, list an instance's objects,
//! delete one. Built on `object_store` (Apache Arrow's S3 client: request signing, retries, streaming).
//!
//! The clusters write the objects (their backup Jobs or CloudNativePG); they get the store's credentials
//! as a Kubernetes Secret, never through the event log. This crate never logs a credential.

pub mod access;

use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, aws::AmazonS3Builder, path::Path};
use sha2::Digest as _;

/// Where the store is and how to reach it. The keys are secrets: `Debug` does not print them.
#[derive(Clone, serde::Deserialize)]
pub struct StoreConfig {
    /// S3 endpoint, e.g. `http://127.0.0.1:8333` (path-style requests)
    pub endpoint: String,
    /// the bucket backups go to
    pub bucket: String,
    /// region the store signs for (S3-compatible stores accept any)
    #[serde(default = "default_region")]
    pub region: String,
    /// access key id
    pub access_key_id: String,
    /// secret access key
    pub secret_access_key: String,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the configuration cannot make a client
    #[error("backup store configuration: {0}")]
    Config(String),
    /// the store answered with an error or could not be reached
    #[error("backup store: {0}")]
    Store(#[from] object_store::Error),
    /// a prefix too short to be one backup's (`<project>/<instance-id>/…`): deleting under it would reach
    /// other backups, other instances' or other tenants'
    #[error("refusing to delete under {0:?}: not one backup's prefix")]
    PrefixTooShort(String),
    /// the store's identity administration (IAM) refused or failed
    #[error("backup store identities: {0}")]
    Access(String),
}

/// One object in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// its key
    pub key: String,
    /// its size in bytes
    pub size: u64,
}

/// What verifying a reported object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// the object is there with the reported size and checksum
    Matches,
    /// no object under the key
    Missing,
    /// the object's size is not the reported one
    SizeDiffers {
        /// what the store holds
        found: u64,
    },
    /// the object's SHA-256 is not the reported one
    ChecksumDiffers {
        /// what the content hashes to, hex
        found: String,
    },
    /// a PostgreSQL base backup's own catalogue (Barman's `backup.info`, its WAL) does not back the report
    CatalogueDiffers {
        /// what is wrong
        why: String,
    },
}

pub use domain::backup::object_key;

pub mod barman;

/// A client of the backup bucket.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStore").finish_non_exhaustive()
    }
}

impl BackupStore {
    /// A client of `config`'s bucket.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            // Path-style requests (`endpoint/bucket/key`): what self-hosted S3 stores serve.
            .with_virtual_hosted_style_request(false)
            .with_allow_http(config.endpoint.starts_with("http://"))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { store: Arc::new(store) })
    }

    /// Stores `content` under `key`; returns its size and SHA-256 (what a backup tool reports).
    pub async fn put(&self, key: &str, content: Vec<u8>) -> Result<(u64, String), StoreError> {
        let sha256 = hex::encode(sha2::Sha256::digest(&content));
        let size = content.len() as u64;
        self.store.put(&Path::from(key), PutPayload::from(content)).await?;
        Ok((size, sha256))
    }

    /// Checks that the object under `key` has `size` bytes hashing to `sha256`, reading it through once
    /// (a stored object's ETag is not its checksum once it was uploaded in parts).
    pub async fn verify(&self, key: &str, size: u64, sha256: &str) -> Result<Verification, StoreError> {
        let got = match self.store.get(&Path::from(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Verification::Missing),
            Err(e) => return Err(e.into()),
        };
        if got.meta.size != size {
            return Ok(Verification::SizeDiffers { found: got.meta.size });
        }
        let mut hasher = sha2::Sha256::new();
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            hasher.update(&chunk?);
        }
        let found = hex::encode(hasher.finalize());
        Ok(if found.eq_ignore_ascii_case(sha256) {
            Verification::Matches
        } else {
            Verification::ChecksumDiffers { found }
        })
    }

    /// Checks that the objects under `prefix` (a backup of many objects) total `size` bytes.
    pub async fn verify_prefix(&self, prefix: &str, size: u64) -> Result<Verification, StoreError> {
        let objects = self.list(prefix).await?;
        let total: u64 = objects.iter().map(|o| o.size).sum();
        Ok(match (objects.is_empty(), total == size) {
            (true, _) => Verification::Missing,
            (false, true) => Verification::Matches,
            (false, false) => Verification::SizeDiffers { found: total },
        })
    }

    /// Checks a PostgreSQL base backup at `location` (`<project>/<instance-id>/<server>/base/<id>`) against
    /// Barman's own catalogue rather than a listing: its `backup.info` says it is backup `<id>` and `DONE`,
    /// and every WAL segment from its `begin_wal` to its `end_wal` (without which it cannot start) is in
    /// the server's WAL archive; then its objects total `size`. See [`barman`].
    pub async fn verify_base_backup(&self, location: &str, size: u64) -> Result<Verification, StoreError> {
        let info = match self.store.get(&Path::from(format!("{location}/backup.info"))).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                let why = format!("Barman's catalogue has no backup.info at {location}");
                return Ok(if self.list(location).await?.is_empty() {
                    Verification::Missing
                } else {
                    Verification::CatalogueDiffers { why }
                });
            }
            Err(e) => return Err(e.into()),
        };
        let info = barman::BackupInfo::parse(&String::from_utf8_lossy(&info));
        let id = location.rsplit('/').next().unwrap_or_default();
        let server_prefix = location.rsplit_once("/base/").map(|(server, _)| server).unwrap_or(location);
        let listed = |dir: String| async move { self.list(&dir).await };
        if let Some(why) = barman::check(&info, id, server_prefix, listed).await? {
            return Ok(Verification::CatalogueDiffers { why });
        }
        self.verify_prefix(location, size).await
    }

    /// Deletes the WAL of a PostgreSQL server (`<project>/<instance-id>/<server>`) that no base backup left
    /// there needs: every archived segment before the `begin_wal` of the oldest completed base backup
    /// (Barman's `backup.info` under `<server>/base/`), which is what Barman's own retention removes with a
    /// backup (`barman-cloud-backup-delete`: WALs older than the oldest remaining backup's begin WAL).
    /// With no completed base backup left nothing is deleted: a backup under way may already need the
    /// newest segments. Returns the keys deleted.
    pub async fn prune_wal(&self, server_prefix: &str) -> Result<Vec<String>, StoreError> {
        if server_prefix.split('/').filter(|segment| !segment.is_empty()).count() < 3 {
            return Err(StoreError::PrefixTooShort(server_prefix.to_owned()));
        }
        let mut oldest: Option<String> = None;
        for object in self.list(&format!("{server_prefix}/base")).await? {
            if !object.key.ends_with("/backup.info") {
                continue;
            }
            let got = match self.store.get(&Path::from(object.key.as_str())).await {
                Ok(got) => got.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let info = barman::BackupInfo::parse(&String::from_utf8_lossy(&got));
            if info.get("status") == Some("DONE")
                && let Some(begin) = info.get("begin_wal")
                && oldest.as_deref().is_none_or(|o| begin < o)
            {
                oldest = Some(begin.to_owned());
            }
        }
        let Some(oldest) = oldest else { return Ok(Vec::new()) };
        let mut deleted = Vec::new();
        for object in self.list(&format!("{server_prefix}/wals")).await? {
            let name = object.key.rsplit('/').next().unwrap_or_default();
            // Segments (`<24 hex>[.<compression>]`) and their backup labels; not timeline `.history` files.
            let segment = name.get(..24).filter(|s| s.chars().all(|c| c.is_ascii_hexdigit()));
            if segment.is_some_and(|s| s < oldest.as_str()) {
                self.delete(&object.key).await?;
                deleted.push(object.key);
            }
        }
        Ok(deleted)
    }

    /// Deletes every object under `prefix` (a backup of many objects); none left is not an error. A prefix
    /// of fewer than three non-empty segments (`<project>/<instance-id>/<backup…>`) is refused: at its
    /// shortest it names one instance's backups, at its emptiest the whole bucket.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        if prefix.split('/').filter(|segment| !segment.is_empty()).count() < 3 {
            return Err(StoreError::PrefixTooShort(prefix.to_owned()));
        }
        for object in self.list(prefix).await? {
            self.delete(&object.key).await?;
        }
        Ok(())
    }

    /// Every object under `prefix` (e.g. an instance's `<project>/<instance-id>`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        let objects: Vec<_> = self.store.list(Some(&Path::from(prefix))).try_collect().await?;
        Ok(objects.into_iter().map(|o| StoredObject { key: o.location.to_string(), size: o.size }).collect())
    }

    /// Deletes the object under `key`; deleting one that is gone is not an error (a retried deletion).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

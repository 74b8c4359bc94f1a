//! Keys per instance: the control plane gives each instance an identity of its own in the store, whose
//! policy reaches that instance's prefix (`<project>/<instance-id>/`) and nothing else, plus read-only
//! access to the prefix of the instance a restore or fork reads from. A taken-over cluster (or a tenant
//! who can read the keys out of a database pod's environment) then reaches its own backups only
//! (ARCHITECTURE.md, *Threat model*).
//!
//! Spoken through the AWS IAM query API (`CreateUser`, `PutUserPolicy`, `CreateAccessKey`, …;
//! AWS IAM API Reference, API version 2010-05-08), signed with SigV4 for service `iam` by
//! `object_store`'s signer. SeaweedFS serves the same API on its S3 port (`weed s3 -iam`, with
//! `-iam.readOnly=false`) and enforces user policies per object key and per `s3:prefix` of a listing
//! (seaweedfs 4.48, `weed/s3api/s3api_embedded_iam.go`; seen in `tests/access.rs`). The same calls work
//! on AWS itself.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use object_store::{
    ClientOptions,
    aws::{AwsAuthorizer, AwsCredential},
    client::{HttpClient, HttpConnector as _, HttpRequestBody, ReqwestConnector},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{StoreConfig, StoreError};

/// Prefix of the store identities this module makes: one per instance, `cp-backups-<instance id>`.
pub const USER_PREFIX: &str = "cp-backups-";
/// The name of the one inline policy each of them has.
const POLICY_NAME: &str = "cp-backups";
/// How long a key just made may take to be accepted (IAM is eventually consistent: AWS documents
/// seconds; SeaweedFS's S3 servers reload identities from the filer).
const KEY_SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The store identity of `instance_id`.
pub fn user_name(instance_id: Uuid) -> String {
    format!("{USER_PREFIX}{}", instance_id.simple())
}

/// The instance whose identity `user` is, if it is one of ours.
pub fn instance_of(user: &str) -> Option<Uuid> {
    user.strip_prefix(USER_PREFIX).and_then(|id| Uuid::try_parse(id).ok())
}

/// What an instance's identity may reach: its own prefix (read, write, delete, list) and, read only,
/// the prefixes it restores from. Each prefix is `<project>/<instance-id>` (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// the instance's own prefix
    pub own: String,
    /// prefixes it may read (a restore's or fork's source)
    pub read: Vec<String>,
}

impl Grant {
    /// The IAM policy document (AWS IAM User Guide, *Policies and permissions*: `s3:ListBucket` is
    /// granted on the bucket with an `s3:prefix` condition; object actions on `bucket/prefix/*`).
    pub fn policy(&self, bucket: &str) -> serde_json::Value {
        let objects = |prefix: &str| format!("arn:aws:s3:::{bucket}/{prefix}/*");
        let listing = |prefixes: Vec<&String>| {
            json!({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [format!("arn:aws:s3:::{bucket}")],
                   "Condition": {"StringLike": {"s3:prefix":
                       prefixes.iter().flat_map(|p| [format!("{p}/*"), format!("{p}/")]).collect::<Vec<_>>()}}})
        };
        let mut statements = vec![json!({"Effect": "Allow",
                   "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                   "Resource": [objects(&self.own)]})];
        if !self.read.is_empty() {
            statements.push(json!({"Effect": "Allow", "Action": ["s3:GetObject"],
                                   "Resource": self.read.iter().map(|p| objects(p)).collect::<Vec<_>>()}));
        }
        statements.push(listing(std::iter::once(&self.own).chain(&self.read).collect()));
        json!({"Version": "2012-10-17", "Statement": statements})
    }
}

/// A key pair of one instance's identity. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceKeys {
    /// access key id
    pub access_key_id: String,
    /// secret access key
    pub secret_access_key: String,
}

impl std::fmt::Debug for InstanceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceKeys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// The control plane's administration of the store's identities, with its own (admin) keys.
#[derive(Clone)]
pub struct AccessAdmin {
    config: StoreConfig,
    http: HttpClient,
}

impl std::fmt::Debug for AccessAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessAdmin").field("config", &self.config).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Members<T> {
    // IAM's list elements are lower case (`<member>`), unlike every other element.
    #[serde(default = "Vec::new", rename = "member")]
    member: Vec<T>,
}

impl<T> Default for Members<T> {
    fn default() -> Self {
        Self { member: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyResponse {
    create_access_key_result: CreateAccessKeyResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyResult {
    access_key: AccessKey,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccessKey {
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResponse {
    list_access_keys_result: ListAccessKeysResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResult {
    #[serde(default)]
    access_key_metadata: Members<AccessKeyMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccessKeyMetadata {
    access_key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUsersResponse {
    list_users_result: ListUsersResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUsersResult {
    #[serde(default)]
    users: Members<UserEntry>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserEntry {
    user_name: String,
}

/// An IAM error code (`NoSuchEntity`, `EntityAlreadyExists`, …) and message.
fn iam_error(code: &str, message: &str) -> StoreError {
    StoreError::Access(format!("{code}: {message}"))
}

impl AccessAdmin {
    /// An administrator of the store `config` names, with its keys.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let options = ClientOptions::new()
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_timeout(Duration::from_secs(30));
        let http =
            ReqwestConnector::default().connect(&options).map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self { config: config.clone(), http })
    }

    /// Calls IAM action `action` with `params`; the response body, or the error IAM answered with.
    async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<Bytes, StoreError> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", "2010-05-08")];
        form.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&form).map_err(|e| StoreError::Access(e.to_string()))?;
        let uri = format!("{}/", self.config.endpoint.trim_end_matches('/'));
        let mut request: Request<HttpRequestBody> = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(HttpRequestBody::from(Bytes::from(body)))
            .map_err(|e| StoreError::Access(e.to_string()))?;
        let credential = AwsCredential {
            key_id: self.config.access_key_id.clone(),
            secret_key: self.config.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "iam", &self.config.region).authorize(&mut request, None);
        let response = self.http.execute(request).await.map_err(|e| StoreError::Access(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| StoreError::Access(e.to_string()))?;
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body);
        match quick_xml::de::from_str::<ErrorResponse>(&text) {
            Ok(e) => Err(iam_error(&e.error.code, &e.error.message)),
            Err(_) => Err(StoreError::Access(format!("{action}: HTTP {status}: {text}"))),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, StoreError> {
        quick_xml::de::from_str(&String::from_utf8_lossy(body)).map_err(|e| StoreError::Access(e.to_string()))
    }

    fn is_code(e: &StoreError, code: &str) -> bool {
        matches!(e, StoreError::Access(text) if text.starts_with(&format!("{code}:")))
    }

    /// Makes `instance_id`'s identity if it does not exist and sets its policy to `grant`. Idempotent.
    pub async fn grant(&self, instance_id: Uuid, grant: &Grant) -> Result<(), StoreError> {
        let user = user_name(instance_id);
        match self.call("CreateUser", &[("UserName", &user)]).await {
            Ok(_) => {}
            Err(e) if Self::is_code(&e, "EntityAlreadyExists") => {}
            Err(e) => return Err(e),
        }
        let policy = grant.policy(&self.config.bucket).to_string();
        self.call(
            "PutUserPolicy",
            &[("UserName", &user), ("PolicyName", POLICY_NAME), ("PolicyDocument", &policy)],
        )
        .await?;
        Ok(())
    }

    /// A new key pair of `instance_id`'s identity (made by [`Self::grant`]). The key it had before
    /// stays valid (so pods still using it finish), older ones are deleted: at most two at a time,
    /// AWS's limit. Returns once the store accepts the new key.
    pub async fn issue_keys(&self, instance_id: Uuid, grant: &Grant) -> Result<InstanceKeys, StoreError> {
        let user = user_name(instance_id);
        let listed: ListAccessKeysResponse =
            Self::parse(&self.call("ListAccessKeys", &[("UserName", &user)]).await?)?;
        let existing = listed.list_access_keys_result.access_key_metadata.member;
        // Keep the newest (IAM lists in creation order), delete the rest.
        for old in existing.iter().rev().skip(1) {
            self.call("DeleteAccessKey", &[("UserName", &user), ("AccessKeyId", &old.access_key_id)]).await?;
        }
        let created: CreateAccessKeyResponse =
            Self::parse(&self.call("CreateAccessKey", &[("UserName", &user)]).await?)?;
        let key = created.create_access_key_result.access_key;
        let keys =
            InstanceKeys { access_key_id: key.access_key_id, secret_access_key: key.secret_access_key };
        self.await_accepted(&keys, grant).await?;
        Ok(keys)
    }

    /// Waits until the store lets `keys` list the grant's own prefix.
    async fn await_accepted(&self, keys: &InstanceKeys, grant: &Grant) -> Result<(), StoreError> {
        let as_instance = crate::BackupStore::new(&StoreConfig {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
            ..self.config.clone()
        })?;
        let deadline = tokio::time::Instant::now() + KEY_SETTLE_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            match as_instance.list(&format!("{}/", grant.own)).await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Access(format!(
                        "a new key was not accepted within {KEY_SETTLE_TIMEOUT:?}: {e}"
                    )));
                }
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Removes `instance_id`'s identity: its keys, its policy, itself. Idempotent.
    pub async fn revoke(&self, instance_id: Uuid) -> Result<(), StoreError> {
        let user = user_name(instance_id);
        let listed = match self.call("ListAccessKeys", &[("UserName", &user)]).await {
            Ok(body) => Self::parse::<ListAccessKeysResponse>(&body)?,
            Err(e) if Self::is_code(&e, "NoSuchEntity") => return Ok(()),
            Err(e) => return Err(e),
        };
        for key in listed.list_access_keys_result.access_key_metadata.member {
            self.call("DeleteAccessKey", &[("UserName", &user), ("AccessKeyId", &key.access_key_id)]).await?;
        }
        match self.call("DeleteUserPolicy", &[("UserName", &user), ("PolicyName", POLICY_NAME)]).await {
            Ok(_) => {}
            Err(e) if Self::is_code(&e, "NoSuchEntity") => {}
            Err(e) => return Err(e),
        }
        match self.call("DeleteUser", &[("UserName", &user)]).await {
            Ok(_) => Ok(()),
            Err(e) if Self::is_code(&e, "NoSuchEntity") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The instances that have an identity in the store.
    pub async fn instances_with_access(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut instances = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut params = vec![("PathPrefix", "/")];
            if let Some(marker) = &marker {
                params.push(("Marker", marker));
            }
            let page: ListUsersResponse = Self::parse(&self.call("ListUsers", &params).await?)?;
            let result = page.list_users_result;
            instances.extend(result.users.member.iter().filter_map(|u| instance_of(&u.user_name)));
            match (result.is_truncated, result.marker) {
                (true, Some(next)) => marker = Some(next),
                _ => return Ok(instances),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_s_name_names_its_instance_and_nothing_else_parses() {
        let id = Uuid::new_v4();
        assert_eq!(instance_of(&user_name(id)), Some(id));
        assert_eq!(instance_of("control-plane"), None);
        assert_eq!(instance_of("cp-backups-not-a-uuid"), None);
    }

    #[test]
    fn the_policy_reaches_the_own_prefix_read_write_and_a_source_read_only() {
        let grant = Grant { own: "acme/1".into(), read: vec!["acme/0".into()] };
        let policy = grant.policy("cp-backups");
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements[0]["Resource"], json!(["arn:aws:s3:::cp-backups/acme/1/*"]));
        assert!(statements[0]["Action"].as_array().unwrap().contains(&json!("s3:DeleteObject")));
        assert_eq!(statements[1]["Action"], json!(["s3:GetObject"]));
        assert_eq!(statements[1]["Resource"], json!(["arn:aws:s3:::cp-backups/acme/0/*"]));
        assert_eq!(
            statements[2]["Condition"]["StringLike"]["s3:prefix"],
            json!(["acme/1/*", "acme/1/", "acme/0/*", "acme/0/"])
        );
    }
}

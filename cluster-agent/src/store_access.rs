//! An instance's backup store keys: asked of the control plane (`streams::store_access`) and kept in the
//! instance's own store Secret (`render::backup::store_secret`), which its ObjectStore, backup and
//! restore Jobs read. The agent holds no store key of its own: what a taken-over cluster can reach is the
//! prefixes of the instances placed on it (ARCHITECTURE.md, *Threat model*).
//!
//! Level-triggered: the Secret records what its keys were granted for (the restore source, if any); a
//! restore asking for another source, or a missing Secret, asks again.

use std::time::Duration;

use kube::{ResourceExt as _, api::Patch};
use serde_json::Value;
use streams::{
    credentials::SealedReply,
    store_access::{StoreAccessReply, StoreAccessRequest, request_subject},
};

use crate::{
    AgentConfig, Error, Result,
    crd::ManagedInstance,
    render::{
        apply_params,
        backup::{self, StoreTarget},
    },
};

/// How long the control plane may take to answer (it may wait for a new key to be accepted).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The restore source the keys must also read, as `<project>/<instance-id>` ("" without a restore).
pub fn wanted_grant(mi: &ManagedInstance) -> String {
    mi.spec
        .restore
        .as_ref()
        .and_then(|restore| {
            let mut parts = restore.location.splitn(3, '/');
            Some(format!("{}/{}", parts.next()?, parts.next()?))
        })
        .unwrap_or_default()
}

/// Whether `secret` (as the cluster holds it) carries keys granted for what `mi` needs now.
pub fn is_current(secret: &Value, mi: &ManagedInstance) -> bool {
    let granted = secret["metadata"]["annotations"][backup::GRANT_ANNOTATION].as_str();
    granted == Some(wanted_grant(mi).as_str()) && secret["data"]["secret-access-key"].is_string()
}

/// Asks the control plane for keys of `mi`'s store identity.
async fn ask(config: &AgentConfig, mi: &ManagedInstance) -> Result<backup::StoreKeys> {
    let ours = nkeys::XKey::new();
    let instance_id = uuid::Uuid::try_parse(&mi.spec.instance_id)
        .map_err(|e| Error::StoreAccess(format!("instance id {:?}: {e}", mi.spec.instance_id)))?;
    let request =
        StoreAccessRequest { project: mi.spec.project.clone(), instance_id, reply_key: ours.public_key() };
    let subject = request_subject(&config.cluster);
    let answer = tokio::time::timeout(
        ANSWER_TIMEOUT,
        config.nats.request(subject, serde_json::to_vec(&request)?.into()),
    )
    .await
    .map_err(|_| Error::StoreAccess(format!("no answer within {ANSWER_TIMEOUT:?}")))?
    .map_err(|e| Error::StoreAccess(format!("asking for store keys: {e}")))?;
    // Keys come sealed to our key; a refusal comes in clear.
    let reply = match serde_json::from_slice::<SealedReply>(&answer.payload) {
        Ok(sealed) => {
            sealed.open_as::<StoreAccessReply>(&ours).map_err(|e| Error::StoreAccess(e.to_string()))?
        }
        Err(_) => serde_json::from_slice::<StoreAccessReply>(&answer.payload)?,
    };
    match reply {
        StoreAccessReply::Granted { access_key_id, secret_access_key, .. } => {
            Ok(backup::StoreKeys { access_key_id, secret_access_key })
        }
        StoreAccessReply::Refused { reason } => Err(Error::StoreAccess(format!("refused: {reason}"))),
    }
}

/// Makes sure `mi`'s store Secret holds keys granted for what it needs now, given the Secret as the
/// cluster holds it (`current`); returns the Secret it wrote, if it wrote one.
pub async fn ensure(
    config: &AgentConfig,
    target: &StoreTarget,
    mi: &ManagedInstance,
    current: Option<&Value>,
) -> Result<Option<Value>> {
    if current.is_some_and(|secret| is_current(secret, mi)) {
        return Ok(None);
    }
    let keys = ask(config, mi).await?;
    let child = backup::store_secret(mi, target, &keys, &wanted_grant(mi));
    let namespace = mi.namespace().unwrap_or_default();
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(config.client.clone(), &namespace);
    let written = api.patch(&child.name, &apply_params(), &Patch::Apply(&child.object)).await?;
    tracing::info!(instance = %mi.name_any(), secret = %child.name, "backup store keys written");
    Ok(Some(serde_json::to_value(&written)?))
}

/// The store as `mi`'s own keys reach it (the agent sizes PostgreSQL base backups with them).
pub async fn instance_store(
    config: &AgentConfig,
    target: &StoreTarget,
    mi: &ManagedInstance,
) -> Result<backup_store::BackupStore> {
    let namespace = mi.namespace().unwrap_or_default();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(config.client.clone(), &namespace);
    let name = backup::store_secret_name(mi);
    let secret = secrets.get(&name).await?;
    let data = secret.data.unwrap_or_default();
    let item = |key: &str| {
        data.get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .ok_or_else(|| Error::StoreAccess(format!("Secret {name} has no {key}")))
    };
    let keys = backup::StoreKeys {
        access_key_id: item("access-key-id")?,
        secret_access_key: item("secret-access-key")?,
    };
    backup_store::BackupStore::new(&target.store_config(&keys)).map_err(|e| Error::StoreAccess(e.to_string()))
}

//! Connection credentials, fetched from a cluster's agent at request time (request/reply on the cluster's
//! own subject, never stored): the API asks, the agent reads the instance's Secret and answers. Core NATS
//! only, so nothing is kept by JetStream; the reply goes to the asking connection's inbox alone.
//!
//! The answer is sealed to a key the asker makes for this one request (nkeys' curve25519 xkeys: a
//! `crypto_box` sealed box), so the password is never in clear on the wire or in anything that logs
//! NATS traffic (async-nats logs every payload at TRACE).

use base64::Engine as _;
use nkeys::XKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Subject the agent of `cluster` answers credential requests on.
pub fn request_subject(cluster: &str) -> String {
    format!("cp.rpc.{cluster}.credentials")
}

/// The queue group a cluster's agents answer in: one answer per request, whichever replica gives it.
pub const RESPONDERS: &str = "cp-agents";

/// Subject filter of every request to the agent of `cluster` (its permission to subscribe).
pub fn requests_filter(cluster: &str) -> String {
    format!("cp.rpc.{cluster}.>")
}

/// What the API asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRequest {
    /// the instance's project
    pub project: String,
    /// the instance
    pub instance_id: Uuid,
    /// its name (the Kubernetes objects' names)
    pub name: String,
    /// its service
    pub service: String,
    /// the asker's one-time public xkey (`X…`) the answer is sealed to
    pub reply_key: String,
    /// a user of the instance (issue 27) whose credentials are asked for; absent: the instance's own.
    /// Added with a default: an agent of an older build answers with the instance's credentials, which
    /// the API refuses to pass off as the user's (the answer's `username` is not the user)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An answer sealed to the asker's key: what travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedReply {
    /// the answering agent's public xkey
    pub sender: String,
    /// the sealed [`CredentialsReply`], base64
    pub sealed: String,
}

/// Why an answer could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[error("credentials reply: {0}")]
pub struct SealError(String);

impl CredentialsReply {
    /// Seals the answer to `recipient` (the request's `reply_key`) with a key made for it.
    pub fn seal(&self, recipient: &str) -> Result<SealedReply, SealError> {
        SealedReply::seal(self, recipient)
    }
}

impl SealedReply {
    /// Seals any answer to `recipient` (a request's one-time public xkey) with a key made for it.
    pub fn seal<T: Serialize>(value: &T, recipient: &str) -> Result<Self, SealError> {
        let recipient = XKey::from_public_key(recipient).map_err(|e| SealError(e.to_string()))?;
        let ours = XKey::new();
        let plain = serde_json::to_vec(value).map_err(|e| SealError(e.to_string()))?;
        let sealed = ours.seal(&plain, &recipient).map_err(|e| SealError(e.to_string()))?;
        Ok(SealedReply {
            sender: ours.public_key(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        })
    }

    /// Opens a credentials answer sealed to `ours`.
    pub fn open(&self, ours: &XKey) -> Result<CredentialsReply, SealError> {
        self.open_as(ours)
    }

    /// Opens an answer of type `T` sealed to `ours`.
    pub fn open_as<T: serde::de::DeserializeOwned>(&self, ours: &XKey) -> Result<T, SealError> {
        let sender = XKey::from_public_key(&self.sender).map_err(|e| SealError(e.to_string()))?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.sealed)
            .map_err(|e| SealError(e.to_string()))?;
        let plain = ours.open(&sealed, &sender).map_err(|e| SealError(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| SealError(e.to_string()))
    }
}

/// The agent's answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CredentialsReply {
    /// the credentials, as the workload uses them
    Found {
        /// user to connect as
        username: String,
        /// its password
        password: String,
        /// host inside the cluster
        host: String,
        /// port
        port: u16,
    },
    /// the cluster has no credentials for it (yet): not created, or not this instance's
    NotReady {
        /// why
        reason: String,
    },
}

/// Never prints the password.
impl std::fmt::Debug for CredentialsReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Found { username, host, port, .. } => f
                .debug_struct("Found")
                .field("username", username)
                .field("password", &"<redacted>")
                .field("host", host)
                .field("port", port)
                .finish(),
            Self::NotReady { reason } => f.debug_struct("NotReady").field("reason", reason).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_s_debug_form_hides_the_password() {
        let reply = CredentialsReply::Found {
            username: "admin".into(),
            password: "s3cret-value".into(),
            host: "db.cp-acme.svc".into(),
            port: 3000,
        };
        assert!(!format!("{reply:?}").contains("s3cret-value"));
    }

    #[test]
    fn only_the_asker_s_key_opens_an_answer_and_the_password_is_not_in_clear() {
        let reply = CredentialsReply::Found {
            username: "admin".into(),
            password: "s3cret-value".into(),
            host: "db.cp-acme.svc".into(),
            port: 3000,
        };
        let asker = XKey::new();
        let sealed = reply.seal(&asker.public_key()).unwrap();
        assert!(!serde_json::to_string(&sealed).unwrap().contains("s3cret-value"));
        assert_eq!(sealed.open(&asker).unwrap(), reply);
        assert!(sealed.open(&XKey::new()).is_err(), "another key opens nothing");
    }
}

//! An agent's request for the backup store keys of one instance on its cluster, answered by the control
//! plane (`projections::store_access`) with keys that reach that instance's prefix only
//! (`backup_store::access`). Core NATS request/reply: nothing is stored; the answer is sealed to a key
//! the agent makes for the request (as credentials are, [`crate::credentials`]), so the secret is never
//! in clear on the wire or in anything that logs NATS traffic.
//!
//! The cluster is the subject's (the agent's account can publish on its own cluster's subject only,
//! [`crate::accounts`]); the control plane answers only for an instance placed on that cluster.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The subject `cluster`'s agent asks on.
pub fn request_subject(cluster: &str) -> String {
    format!("cp.storeaccess.{cluster}")
}

/// What the control plane answers on (one token: the cluster).
pub const REQUESTS_FILTER: &str = "cp.storeaccess.*";

/// The queue group of the control plane's responders.
pub const RESPONDERS: &str = "cp-store-access";

/// The cluster a request's subject names.
pub fn cluster_of(subject: &str) -> Option<&str> {
    subject.strip_prefix("cp.storeaccess.").filter(|c| !c.is_empty() && !c.contains('.'))
}

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreAccessRequest {
    /// the instance's project
    pub project: String,
    /// the instance
    pub instance_id: Uuid,
    /// the asker's one-time public xkey (`X…`) the answer is sealed to
    pub reply_key: String,
}

/// The control plane's answer, sealed ([`crate::credentials::SealedReply`]) when keys are given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StoreAccessReply {
    /// keys reaching the instance's prefix (and, read only, the prefix its restore reads)
    Granted {
        /// access key id
        access_key_id: String,
        /// secret access key
        secret_access_key: String,
        /// the prefixes the keys may read besides the instance's own (`<project>/<instance-id>`)
        read: Vec<String>,
    },
    /// refused: not this cluster's instance, no store, or the store failed
    Refused {
        /// why
        reason: String,
    },
}

/// Never prints the secret.
impl std::fmt::Debug for StoreAccessReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Granted { access_key_id, read, .. } => f
                .debug_struct("Granted")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field("read", read)
                .finish(),
            Self::Refused { reason } => f.debug_struct("Refused").field("reason", reason).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_is_the_subject_s_one_token() {
        assert_eq!(cluster_of(&request_subject("eu-1")), Some("eu-1"));
        assert_eq!(cluster_of("cp.storeaccess.eu-1.more"), None);
        assert_eq!(cluster_of("cp.storeaccess."), None);
        assert_eq!(cluster_of("cp.rpc.eu-1"), None);
    }

    #[test]
    fn a_reply_s_debug_form_hides_the_secret() {
        let reply = StoreAccessReply::Granted {
            access_key_id: "AKIA".into(),
            secret_access_key: "s3cret-value".into(),
            read: vec![],
        };
        assert!(!format!("{reply:?}").contains("s3cret-value"));
    }
}

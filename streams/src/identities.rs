//! NATS identities of the control plane's processes, as nats-server configuration entries: an nkey per
//! process kind, so the server holds only public keys and each process only its own seed.

use serde_json::{Value, json};

use crate::{Settings, cluster_feed::agent_permissions};

/// Whose identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsRole {
    /// the API and the projector: every right in the control plane's account (they make the topology)
    ControlPlane,
    /// one cluster's agent: only its own feed and observed subjects ([`agent_permissions`])
    Agent {
        /// the cluster's name
        cluster: String,
    },
}

impl std::str::FromStr for NatsRole {
    type Err = String;

    /// `control-plane` or `agent:<cluster>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "control-plane" => Ok(Self::ControlPlane),
            Some(("agent", cluster)) if !cluster.is_empty() => {
                Ok(Self::Agent { cluster: cluster.to_owned() })
            }
            _ => Err(format!("{text:?}: expected control-plane or agent:<cluster>")),
        }
    }
}

/// A new identity: the private seed (for the process, `--nats-nkey`) and the entry for the `users` list
/// of the control plane's account in nats-server's configuration (see `deploy/nats/`).
pub fn new_identity(settings: &Settings, role: &NatsRole) -> (String, Value) {
    let pair = nkeys::KeyPair::new_user();
    let seed = pair.seed().expect("a new user key pair has a seed");
    let entry = match role {
        NatsRole::ControlPlane => json!({"nkey": pair.public_key()}),
        NatsRole::Agent { cluster } => {
            json!({"nkey": pair.public_key(), "permissions": agent_permissions(settings, cluster)})
        }
    };
    (seed, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_identity_carries_its_cluster_s_permissions_and_the_seed_matches_the_key() {
        let role: NatsRole = "agent:eu-1".parse().unwrap();
        let (seed, entry) = new_identity(&Settings::default(), &role);
        let public = nkeys::KeyPair::from_seed(&seed).unwrap().public_key();
        assert_eq!(entry["nkey"], public);
        assert_eq!(entry["permissions"], agent_permissions(&Settings::default(), "eu-1"));
        assert_eq!("control-plane".parse::<NatsRole>(), Ok(NatsRole::ControlPlane));
        assert!("agent:".parse::<NatsRole>().is_err());
    }
}

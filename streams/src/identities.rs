//! NATS identities and accounts of the control plane's processes, as nats-server configuration: an nkey
//! per process kind, so the server holds only public keys and each process only its own seed; the control
//! plane in its own account, each cluster's agent in an account of its own ([`crate::accounts`]).

use std::path::Path;

use serde_json::{Value, json};

use crate::{
    Settings,
    accounts::{CONTROL_PLANE_ACCOUNT, agent_account},
};

/// Whose identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsRole {
    /// `cp-api --migrate` and operators: every right in the control plane's account (it makes and changes
    /// the topology)
    Admin,
    /// the API and the projector: everything but administering the streams and buckets
    /// ([`control_plane_permissions`])
    ControlPlane,
    /// one cluster's agent: its own account, importing only its own feed and observed subjects
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
            None if text == "admin" => Ok(Self::Admin),
            Some(("agent", cluster)) if !cluster.is_empty() => {
                Ok(Self::Agent { cluster: cluster.to_owned() })
            }
            _ => Err(format!("{text:?}: expected admin, control-plane or agent:<cluster>")),
        }
    }
}

impl NatsRole {
    /// The file name of its seed in an identities directory.
    pub fn seed_file_name(&self) -> String {
        match self {
            Self::Admin => "admin.nk".to_owned(),
            Self::ControlPlane => "control-plane.nk".to_owned(),
            Self::Agent { cluster } => format!("agent-{cluster}.nk"),
        }
    }
}

/// A new identity: the private seed (for the process, `--nats-nkey`) and its public key.
pub fn new_identity() -> (String, String) {
    let pair = nkeys::KeyPair::new_user();
    (pair.seed().expect("a new user key pair has a seed"), pair.public_key())
}

/// The public key of a seed.
pub fn public_key(seed: &str) -> Result<String, String> {
    nkeys::KeyPair::from_seed(seed.trim()).map(|pair| pair.public_key()).map_err(|e| e.to_string())
}

/// The `permissions` of the API's and the projector's identity: everything in the control plane's account
/// (they publish commands, read the stream, write the read models, register clusters, whose streams and
/// consumers they make) except changing or deleting the event stream, the dead letters and the buckets,
/// or deleting any stream or message. `cp-api --migrate` does that, as the admin.
pub fn control_plane_permissions(settings: &Settings) -> Value {
    let mut deny = vec![
        "$JS.API.STREAM.DELETE.>".to_owned(),
        "$JS.API.STREAM.PURGE.>".to_owned(),
        "$JS.API.STREAM.MSG.DELETE.>".to_owned(),
    ];
    let buckets = [
        &settings.names_bucket,
        &settings.idempotency_bucket,
        &settings.clusters_bucket,
        &settings.read_models_bucket,
        &settings.liveness_bucket,
        &settings.leases_bucket,
        &settings.rollouts_bucket,
    ];
    let owned = [settings.events_stream.clone(), crate::dead_letters::DEAD_LETTERS_STREAM.to_owned()]
        .into_iter()
        .chain(buckets.into_iter().map(|bucket| format!("KV_{bucket}")));
    for stream in owned {
        deny.push(format!("$JS.API.STREAM.CREATE.{stream}"));
        deny.push(format!("$JS.API.STREAM.UPDATE.{stream}"));
    }
    json!({"publish": {"deny": deny}})
}

/// nats-server's `accounts` block: the control plane's account with the admin `admin_key` and the users
/// `control_plane_keys` (with [`control_plane_permissions`]), and one account per `(cluster, public key)`
/// in `agents` with the exports and imports between them ([`crate::accounts::agent_account`]). JSON
/// values, which nats-server's format takes as they are.
pub fn accounts_conf(
    settings: &Settings,
    admin_key: &str,
    control_plane_keys: &[String],
    agents: &[(String, String)],
) -> String {
    let permissions = control_plane_permissions(settings);
    let mut users = vec![json!({"nkey": admin_key})];
    users.extend(control_plane_keys.iter().map(|key| json!({"nkey": key, "permissions": permissions})));
    let mut control_plane = json!({
        "jetstream": "enabled",
        "users": users,
        "exports": [],
        "imports": [],
    });
    let mut accounts = serde_json::Map::new();
    for (cluster, key) in agents {
        let layout = agent_account(settings, cluster);
        extend(&mut control_plane["exports"], layout.control_plane_exports.clone());
        extend(&mut control_plane["imports"], layout.control_plane_imports.clone());
        accounts.insert(layout.name.clone(), layout.account_entry(json!({"nkey": key})));
    }
    let mut all = serde_json::Map::new();
    all.insert(CONTROL_PLANE_ACCOUNT.to_owned(), control_plane);
    all.extend(accounts);
    let body = serde_json::to_string_pretty(&Value::Object(all)).expect("accounts serialize");
    format!(
        "# Written by `cp-api --write-nats-accounts`: the control plane's account and one account per \
         cluster's agent\n# (streams::accounts). Reload nats-server after a change: nats-server \
         --signal reload\naccounts {body}\n"
    )
}

fn extend(list: &mut Value, items: Vec<Value>) {
    if let Value::Array(list) = list {
        list.extend(items);
    }
}

/// Makes what is missing of `roles`' seeds in `dir` (mode 0600; existing seeds are kept) and returns
/// each role's public key, in order.
pub fn ensure_identities(dir: &Path, roles: &[NatsRole]) -> std::io::Result<Vec<String>> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    std::fs::create_dir_all(dir)?;
    let mut keys = Vec::new();
    for role in roles {
        let path = dir.join(role.seed_file_name());
        let key = match std::fs::read_to_string(&path) {
            Ok(seed) => public_key(&seed)
                .map_err(|e| std::io::Error::other(format!("{}: not an nkey seed: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (seed, key) = new_identity();
                let mut file =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                file.write_all(seed.as_bytes())?;
                key
            }
            Err(e) => return Err(e),
        };
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accounts_block_gives_each_agent_its_own_account_and_keeps_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let roles: Vec<NatsRole> = ["admin", "control-plane", "agent:eu-1", "agent:eu-2"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let keys = ensure_identities(dir.path(), &roles).unwrap();
        assert_eq!(ensure_identities(dir.path(), &roles).unwrap(), keys, "seeds are kept");
        let seed = std::fs::read_to_string(dir.path().join("agent-eu-1.nk")).unwrap();
        assert_eq!(public_key(&seed).unwrap(), keys[2]);
        let agents = vec![("eu-1".to_owned(), keys[2].clone()), ("eu-2".to_owned(), keys[3].clone())];
        let settings = Settings::default();
        let text = accounts_conf(&settings, &keys[0], &keys[1..2], &agents);
        let body: Value = serde_json::from_str(text.split_once("accounts ").unwrap().1).unwrap();
        assert_eq!(body["CP"]["users"][0], json!({"nkey": keys[0]}), "the admin: every right");
        assert_eq!(body["CP"]["users"][1]["permissions"], control_plane_permissions(&settings));
        assert_eq!(body["AGENT_eu-1"]["users"][0]["nkey"], keys[2]);
        assert!(!body["AGENT_eu-1"].to_string().contains("eu-2"));
        assert_eq!(body["CP"]["imports"].as_array().unwrap().len(), 2, "one credentials service per cluster");
    }
}

//! NATS accounts: the isolation unit between clusters.
//!
//! A member cluster may be taken over together with its agent's credentials (ARCHITECTURE.md, *Threat
//! model*). User permissions inside one account cannot contain such an agent: a pull request's reply
//! subject is not checked by nats-server (`server/client.go` `isReservedReply` only refuses `_R_.`,
//! `$JS.ACK.` and `$GNR.`), and the server delivers the consumer's messages there with the account's
//! rights — into another cluster's `cp.obs` subjects, a KV bucket, anything the stream captures.
//!
//! So each cluster's agent lives in an account of its own ([`agent_account_name`]) that has no JetStream
//! and holds nothing but imports of exactly what its agent uses, each exported by the control plane's
//! account to that one account only:
//!
//! - its own stream's and consumer's JetStream API calls (info, reset, next message), mapped under
//!   [`AGENT_API_PREFIX`] because an account without JetStream has the server answer its own `$JS.API.…`
//!   ("JetStream not enabled for account"); the agent uses [`agent_jetstream`];
//! - acknowledgements of its consumer's messages (`$JS.ACK.<stream>.<consumer>.>`);
//! - publishing its cluster's observed facts (`cp.obs.<cluster>.>`, mapped to its own bounded intake,
//!   [`crate::intake`]) and its dead letters, with JetStream's acknowledgement coming back as the
//!   service's reply;
//! - asking for an instance's backup store keys (`cp.storeaccess.<cluster>`, [`crate::store_access`]).
//!
//! and exports one service back: the control plane's requests to it (`cp.rpc.<cluster>.>`, credentials).
//! Whatever reply subject an agent puts on a pull, the messages are delivered to that subject *in its own
//! account*, where nothing but its own agent can listen: they reach no other cluster, no bucket, no
//! stream. Seen against nats-server 2.15 (`tests/tests/system/hostile_agent.rs`).

use async_nats::jetstream;
use serde_json::{Value, json};

use crate::{
    Settings,
    cluster_feed::{agent_consumer_name, desired_stream_name},
    credentials::requests_filter,
    dead_letters::Reader,
    instances::observed_cluster_filter,
};

/// The control plane's account: the streams, the buckets, the API and the projector.
pub const CONTROL_PLANE_ACCOUNT: &str = "CP";

/// Where an agent's account finds the JetStream API calls it imports (`<prefix>.CONSUMER.…`).
pub const AGENT_API_PREFIX: &str = "JS.CP.API";

/// Connections one agent's account may hold at once (its replicas, each with one connection, and room
/// for restarts whose old connection the server has not yet timed out).
pub const AGENT_MAX_CONNECTIONS: i64 = 8;

/// Subscriptions one agent's account may hold (an agent needs its reply inbox and its request subject).
pub const AGENT_MAX_SUBSCRIPTIONS: i64 = 256;

/// The account of `cluster`'s agent.
pub fn agent_account_name(cluster: &str) -> String {
    format!("AGENT_{cluster}")
}

/// The JetStream context an agent uses: its API calls go through its account's imports.
pub fn agent_jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::with_prefix(client, AGENT_API_PREFIX)
}

/// What nats-server's configuration needs for `cluster`: entries for the control plane's account
/// (`exports`, `imports`) and the agent's own account (without `users`; add the agent's nkey there).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentAccount {
    /// the agent's account's name
    pub name: String,
    /// to append to the control plane's account's `exports`
    pub control_plane_exports: Vec<Value>,
    /// to append to the control plane's account's `imports`
    pub control_plane_imports: Vec<Value>,
    /// the agent's account: `imports` and `exports`
    pub account: Value,
    /// the `permissions` of the agent's user in its account
    /// ([`crate::cluster_feed::agent_permissions`])
    pub user_permissions: Value,
}

impl AgentAccount {
    /// As JSON, for configuration writers (`testkit`, `cp-api --new-nats-identity`).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an account layout serializes")
    }

    /// The account's entry for nats-server's `accounts` block, with `user` (an `{"nkey": …}` object)
    /// given the agent's permissions.
    pub fn account_entry(&self, mut user: Value) -> Value {
        user["permissions"] = self.user_permissions.clone();
        let mut account = self.account.clone();
        account["users"] = json!([user]);
        account
    }
}

/// One service of the control plane's account that a cluster's agent uses.
pub(crate) struct AgentService {
    /// its subject in the control plane's account
    subject: String,
    /// the subject the agent publishes on in its own account (the import's `to`, when it differs)
    pub(crate) local: String,
    /// answered with many messages (a pull: messages and heartbeats)
    streamed: bool,
}

/// Every service `cluster`'s agent uses, and nothing more: what its account imports
/// ([`agent_account`]) and what its user may publish ([`crate::cluster_feed::agent_permissions`]).
pub(crate) fn agent_services(settings: &Settings, cluster: &str) -> Vec<AgentService> {
    let (stream, consumer) = (desired_stream_name(settings, cluster), agent_consumer_name(cluster));
    let api = |call: String, streamed: bool| AgentService {
        subject: format!("$JS.API.{call}"),
        local: format!("{AGENT_API_PREFIX}.{call}"),
        streamed,
    };
    let same = |subject: String| AgentService { local: subject.clone(), subject, streamed: false };
    vec![
        api(format!("STREAM.INFO.{stream}"), false),
        api(format!("CONSUMER.INFO.{stream}.{consumer}"), false),
        api(format!("CONSUMER.RESET.{stream}.{consumer}"), false),
        api(format!("CONSUMER.MSG.NEXT.{stream}.{consumer}"), true),
        same(crate::cluster_feed::agent_ack_filter(settings, cluster)),
        // Its facts: published on `cp.obs.<cluster>.…` in its account, stored in its own bounded intake
        // (`crate::intake`), never straight into the event stream.
        AgentService {
            subject: crate::intake::cluster_filter(cluster),
            local: observed_cluster_filter(cluster),
            streamed: false,
        },
        same(Reader::Agent { cluster: cluster.to_owned() }.subject()),
        // The backup store keys of an instance on its cluster, answered by the control plane.
        same(crate::store_access::request_subject(cluster)),
    ]
}

/// The account layout of `cluster`'s agent.
pub fn agent_account(settings: &Settings, cluster: &str) -> AgentAccount {
    let name = agent_account_name(cluster);
    let mut control_plane_exports = Vec::new();
    let mut imports = Vec::new();
    for service in agent_services(settings, cluster) {
        let mut export = json!({"service": service.subject, "accounts": [name]});
        if service.streamed {
            export["response_type"] = json!("stream");
        }
        control_plane_exports.push(export);
        let mut import = json!({"service": {"account": CONTROL_PLANE_ACCOUNT, "subject": service.subject}});
        if service.local != service.subject {
            import["to"] = json!(service.local);
        }
        imports.push(import);
    }
    let requests = requests_filter(cluster);
    AgentAccount {
        control_plane_imports: vec![json!({"service": {"account": name, "subject": requests}})],
        account: json!({
            "imports": imports,
            "exports": [{"service": requests, "accounts": [CONTROL_PLANE_ACCOUNT]}],
            // nats-server `server/opts.go` `parseAccountLimits`: a taken-over agent cannot exhaust the
            // server's connections or subscriptions, nor send messages larger than a fact may be.
            "limits": {
                "max_connections": AGENT_MAX_CONNECTIONS,
                "max_subscriptions": AGENT_MAX_SUBSCRIPTIONS,
                "max_payload": settings.max_message_bytes,
            },
        }),
        user_permissions: crate::cluster_feed::agent_permissions(settings, cluster),
        name,
        control_plane_exports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_s_account_imports_only_its_own_cluster_s_subjects() {
        let layout = agent_account(&Settings::default(), "eu-1");
        assert_eq!(layout.name, "AGENT_eu-1");
        let text = serde_json::to_string(&layout.account).unwrap();
        assert!(!text.contains("eu-2") && !text.contains("$KV") && !text.contains("cp.evt"), "{text}");
        // Every export of the control plane's account for it is for it alone.
        for export in &layout.control_plane_exports {
            assert_eq!(export["accounts"], json!(["AGENT_eu-1"]), "{export}");
            let subject = export["service"].as_str().unwrap();
            assert!(subject.contains("eu-1") && !subject.contains('*'), "{subject}");
        }
        assert_eq!(layout.control_plane_imports[0]["service"]["subject"], "cp.rpc.eu-1.>");
    }
}

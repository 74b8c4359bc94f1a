//! Harness: a real nats-server, the write path on it, simulated clusters, and agents.

#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use cluster_agent::{AgentConfig, Metrics, counting_client};
use domain::{InstanceCommand, ProvisionInstance, ServiceType, UpdateInstance};
use k8s_sim::{Simulator, SimulatorOptions, store::Store};
use serde_json::Value;
use streams::{CommandMetadata, Settings, Topology, instances::InstanceCommands};
use testkit::NatsServer;
use uuid::Uuid;

/// How long convergence may take in tests.
pub const CONVERGE: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub name: String,
    pub sim: Simulator,
    pub url: String,
    pub agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub metrics: Metrics,
}

pub struct World {
    pub nats_server: NatsServer,
    pub nats: async_nats::Client,
    pub topology: Topology,
    pub commands: InstanceCommands,
    pub clusters: Vec<Cluster>,
}

impl World {
    pub async fn start(clusters: &[&str]) -> Self {
        Self::start_with(clusters, Duration::from_millis(20)).await
    }

    pub async fn start_with(names: &[&str], ready_delay: Duration) -> Self {
        let mut world = Self::without_agents(names, ready_delay).await;
        for i in 0..world.clusters.len() {
            world.start_agent(i);
        }
        world
    }

    pub async fn without_agents(names: &[&str], ready_delay: Duration) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let nats_server = NatsServer::start();
        let nats = async_nats::connect(nats_server.url()).await.expect("connect");
        let topology =
            Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await.expect("topology");
        let commands = InstanceCommands::new(&topology, 10_000);
        let mut clusters = Vec::new();
        for name in names {
            let sim = Simulator::new(SimulatorOptions {
                ready_delay,
                bookmark_interval: Duration::from_millis(500),
            });
            let address = sim.serve("127.0.0.1:0".parse().unwrap()).await.expect("serve simulator");
            clusters.push(Cluster {
                name: (*name).to_owned(),
                sim,
                url: format!("http://{address}"),
                agent: None,
                metrics: Metrics::default(),
            });
        }
        Self { nats_server, nats, topology, commands, clusters }
    }

    pub fn start_agent(&mut self, i: usize) {
        let cluster = &mut self.clusters[i];
        cluster.metrics = Metrics::default();
        let client = counting_client(kube::Config::new(cluster.url.parse().unwrap()), &cluster.metrics)
            .expect("client");
        let config = AgentConfig {
            cluster: cluster.name.clone(),
            client,
            nats: self.nats.clone(),
            settings: Settings::default(),
            concurrency: 16,
            resync: Duration::from_secs(300),
            install_crd: true,
            metrics: cluster.metrics.clone(),
        };
        cluster.agent = Some(tokio::spawn(cluster_agent::run(config)));
    }

    pub fn sim(&self, cluster: &str) -> &Simulator {
        &self.clusters.iter().find(|c| c.name == cluster).expect("cluster").sim
    }

    pub async fn provision(&self, cluster: &str, name: &str, service: ServiceType, version: &str) -> Uuid {
        let id = Uuid::now_v7();
        let command = InstanceCommand::Provision(ProvisionInstance::new(
            id, "acme", name, service, version, "starter", cluster,
        ));
        self.commands
            .execute("acme", id, command, None, CommandMetadata::new("provision", "test"))
            .await
            .expect("provision");
        id
    }

    pub async fn update(&self, id: Uuid, update: UpdateInstance) -> u64 {
        let committed = self
            .commands
            .execute(
                "acme",
                id,
                InstanceCommand::Update(update),
                None,
                CommandMetadata::new("update", "test"),
            )
            .await
            .expect("update");
        committed.version
    }

    pub async fn deprovision(&self, id: Uuid) {
        self.commands
            .execute(
                "acme",
                id,
                InstanceCommand::Deprovision,
                None,
                CommandMetadata::new("deprovision", "test"),
            )
            .await
            .expect("deprovision");
    }

    /// Observed-state events of a cluster, decoded, in order.
    pub async fn observed(&self, cluster: &str) -> Vec<Value> {
        let stream = self.topology.events.clone();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: streams::instances::observed_cluster_filter(cluster),
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::new();
        while pending > 0 {
            use futures::StreamExt as _;
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("observed message")
                .unwrap()
                .unwrap();
            out.push(serde_json::from_slice(&message.payload).expect("json"));
            pending -= 1;
        }
        out
    }
}

/// The ManagedInstance of `name` in project acme, if any.
pub fn managed_instance(store: &Store, name: &str) -> Option<Value> {
    let ty = store.resource_type("cp.example.com", "v1alpha1", "managedinstances")?;
    store.get(&ty, "cp-acme", name)
}

pub fn phase(store: &Store, name: &str) -> Option<String> {
    managed_instance(store, name).and_then(|mi| mi["status"]["phase"].as_str().map(str::to_owned))
}

/// Ready at generation `generation`.
pub fn ready_at(store: &Store, name: &str, generation: u64) -> bool {
    managed_instance(store, name).is_some_and(|mi| {
        mi["status"]["phase"] == "Ready" && mi["status"]["observedGeneration"].as_u64() == Some(generation)
    })
}

pub fn object(store: &Store, group: &str, version: &str, plural: &str, name: &str) -> Option<Value> {
    let ty = store.resource_type(group, version, plural)?;
    store.get(&ty, "cp-acme", name)
}

pub fn count_owned(store: &Store, instance: Uuid) -> usize {
    let selector = format!("cp.example.com/instance-id={instance}");
    store.types().iter().map(|t| store.list(t, None, Some(&selector)).len()).sum()
}

/// Fails unless every request the simulated API server has seen so far is allowed by the agent's RBAC
/// rules (`cluster_agent::rbac`, the source of `deploy/rbac/`): on a real cluster it would be a 403.
pub fn assert_permitted(sim: &Simulator) {
    let denied: Vec<String> = sim
        .request_counts()
        .into_keys()
        .filter(|key| {
            let (verb, resource) = key.split_once(' ').expect("counts are keyed `verb resource`");
            // `plural.group/subresource`; core resources have no group.
            let (base, subresource) = match resource.split_once('/') {
                Some((base, sub)) => (base, Some(sub)),
                None => (resource, None),
            };
            let (plural, group) = base.split_once('.').unwrap_or((base, ""));
            let resource = match subresource {
                Some(sub) => format!("{plural}/{sub}"),
                None => plural.to_owned(),
            };
            !cluster_agent::rbac::permits(verb, group, &resource)
        })
        .collect();
    assert!(denied.is_empty(), "requests the agent's RBAC rules do not allow: {denied:?}");
}

/// Writes (patch/create/update/delete) per resource, without watches, lists and gets.
pub fn writes(sim: &Simulator) -> std::collections::BTreeMap<String, u64> {
    sim.request_counts()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("watch ") && !k.starts_with("list ") && !k.starts_with("get "))
        .collect()
}

pub fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

pub type Shared<T> = Arc<T>;

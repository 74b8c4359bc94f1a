//! Harness: a real nats-server, the write path on it, clusters, and agents. A cluster is either the
//! project's simulator (`k8s-sim`) or a real Kubernetes control plane built from upstream Go modules
//! (`kubeenv`); the same scenarios run on both (see [`on_both_backends`]).

#![allow(dead_code, unreachable_pub)]

pub mod kube_cluster;
pub mod requests;

use std::{collections::BTreeMap, time::Duration};

use cluster_agent::{AgentConfig, Metrics};
use domain::{InstanceCommand, ProvisionInstance, ServiceType, UpdateInstance};
use k8s_sim::{Simulator, SimulatorOptions};
use kubeenv::{ControlPlane, Identity};
use serde_json::Value;
use streams::{CommandMetadata, Settings, Topology, instances::InstanceCommands};
use testkit::NatsServer;
use uuid::Uuid;

pub use kube_cluster::Kube;
pub use requests::Requests;

/// How long convergence may take in tests.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// The namespace of project `acme`, which every test uses.
pub const NAMESPACE: &str = "cp-acme";

/// Which API server a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// the project's simulator
    Sim,
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, from upstream
    Real,
}

/// Generates `simulator` and `kube_apiserver` tests for an `async fn scenario(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn simulator() {
                super::$scenario($crate::common::Backend::Sim).await
            }

            #[tokio::test]
            async fn kube_apiserver() {
                super::$scenario($crate::common::Backend::Real).await
            }
        }
    };
}

pub struct Cluster {
    pub name: String,
    pub kube: Kube,
    pub agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub metrics: Metrics,
    /// every request the in-process agent made, by `verb resource`
    pub requests: Requests,
    /// the agent's NATS identity, with exactly the rights `streams::cluster_feed` grants an agent
    pub identity: Option<testkit::NkeyUser>,
}

pub struct World {
    pub nats_server: NatsServer,
    pub nats: async_nats::Client,
    pub topology: Topology,
    pub commands: InstanceCommands,
    pub clusters: Vec<Cluster>,
    /// where the agents started from now on send backups
    pub backup_store: Option<cluster_agent::render::backup::StoreTarget>,
    /// the control plane's view of that store (its admin keys), and its answers to agents' key requests
    pub store_admin: Option<(backup_store::StoreConfig, tokio_util::task::AbortOnDropHandle<()>)>,
    /// the egress settings of the agents started from now on
    pub egress: cluster_agent::render::egress::EgressSettings,
    /// the election the agents started from now on take part in (`None`: each converges alone)
    pub election: Option<cluster_agent::leader::Election>,
}

impl World {
    pub async fn start(backend: Backend, clusters: &[&str]) -> Self {
        Self::start_with(backend, clusters, Duration::from_millis(20)).await
    }

    pub async fn start_with(backend: Backend, names: &[&str], ready_delay: Duration) -> Self {
        let mut world = Self::without_agents(backend, names, ready_delay).await;
        for i in 0..world.clusters.len() {
            world.start_agent(i).await;
        }
        world
    }

    /// `ready_delay`: how long simulated workloads take to become ready (the real backend takes what it
    /// takes).
    pub async fn without_agents(backend: Backend, names: &[&str], ready_delay: Duration) -> Self {
        let nats_server = NatsServer::start();
        Self::on_nats(backend, names, ready_delay, nats_server).await
    }

    pub async fn on_nats(
        backend: Backend,
        names: &[&str],
        ready_delay: Duration,
        nats_server: NatsServer,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let nats = nats_server.connect().await;
        let topology =
            Settings::default().apply(&async_nats::jetstream::new(nats.clone())).await.expect("topology");
        let commands = InstanceCommands::new(&topology, 10_000);
        let mut clusters = Vec::new();
        for name in names {
            let kube = match backend {
                Backend::Sim => {
                    let sim = Simulator::new(SimulatorOptions {
                        ready_delay,
                        bookmark_interval: Duration::from_millis(500),
                        // As a cloud would (the real API server's twin: `kubeenv::load_balancer`).
                        load_balancer_pool: k8s_sim::load_balancer::parse_pool("198.51.100.0/24").ok(),
                        ..SimulatorOptions::default()
                    });
                    let address = sim.serve("127.0.0.1:0".parse().unwrap()).await.expect("serve simulator");
                    Kube::Sim { sim, url: format!("http://{address}") }
                }
                Backend::Real => {
                    let plane = ControlPlane::start().await;
                    eprintln!("Kubernetes control plane ready in {:?}", plane.startup);
                    let admin = plane.client(Identity::Admin).await.expect("admin client");
                    Kube::Real { plane, admin }
                }
            };
            clusters.push(Cluster {
                name: (*name).to_owned(),
                kube,
                agent: None,
                metrics: Metrics::default(),
                requests: Requests::default(),
                identity: None,
            });
        }
        // Registered as the API registers clusters: the stream and consumer its agent reads, and the
        // intake its facts go to, which the intake gate (run beside the projector) empties into the
        // event stream.
        let registry = streams::clusters::ClusterRegistry::open(&topology).await.expect("cluster registry");
        for name in names {
            let cluster = domain::Cluster { name: (*name).to_owned(), region: "test".to_owned() };
            registry.register(&cluster).await.expect("register the cluster");
        }
        tokio::spawn(projections::intake::run(
            topology.jetstream.clone(),
            topology.settings.clone(),
            registry,
            projections::intake::IntakeLimits::default(),
            projections::intake::IntakeMetrics::default(),
        ));
        Self {
            nats_server,
            nats,
            topology,
            commands,
            clusters,
            backup_store: None,
            store_admin: None,
            egress: Default::default(),
            election: None,
        }
    }

    /// Stops the agent of cluster `i` (it stops everything it started).
    pub async fn stop_agent(&mut self, i: usize) {
        if let Some(agent) = self.clusters[i].agent.take() {
            agent.abort();
            let _ = agent.await;
        }
    }

    /// The read models as the projector folds the whole stream now (`projections::rebuild`).
    /// Waits until the intake gate has moved every fact the agents' intakes hold onto the event stream:
    /// what an agent had acknowledged (before it wrote the status a test waited for) is then in the
    /// stream. Bounded; panics with the intake's count otherwise.
    pub async fn intakes_moved(&self) {
        for cluster in &self.clusters {
            let name = streams::intake::stream_name(&cluster.name);
            let mut intake = self.topology.jetstream.get_stream(&name).await.expect("the cluster's intake");
            let deadline = tokio::time::Instant::now() + CONVERGE;
            loop {
                let waiting = intake.info().await.expect("intake info").state.messages;
                if waiting == 0 {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{waiting} facts stayed in {name}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    pub async fn read_models(&self) -> projections::ReadModel {
        self.intakes_moved().await;
        let mut events = self.topology.events.clone();
        let last = events.info().await.expect("stream info").state.last_sequence;
        projections::rebuild::fold_stream(&events, last, true).await.expect("fold the stream").model
    }

    /// Starts the agent of cluster `i` in this process, with its requests recorded.
    pub async fn start_agent(&mut self, i: usize) {
        self.start_agent_with_resync(i, Duration::from_secs(300)).await;
    }

    /// Agents started from now on send backups to `s3`'s backup bucket, with the keys of each instance
    /// that the control plane gives them (answered here as the leading projector does).
    pub async fn send_backups_to(&mut self, s3: &testkit::S3Server) {
        self.backup_store = Some(cluster_agent::render::backup::StoreTarget {
            endpoint: s3.endpoint(),
            bucket: testkit::s3::BACKUP_BUCKET.into(),
        });
        let config = backup_store::StoreConfig {
            endpoint: s3.endpoint(),
            bucket: testkit::s3::BACKUP_BUCKET.into(),
            region: "us-east-1".into(),
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
        };
        let admin = backup_store::access::AccessAdmin::new(&config).expect("an admin of the test store");
        let responder = projections::store_access::Responder::subscribe(
            self.nats_server.connect().await,
            self.commands.clone(),
            admin,
            projections::store_access::StoreAccessMetrics::default(),
        )
        .await
        .expect("subscribe to store key requests");
        let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(responder.run()));
        self.store_admin = Some((config, task));
    }

    /// Agents started from now on have a backup store at `endpoint` (which nothing serves: for what the
    /// agent renders from its address).
    pub fn send_backups_to_address(&mut self, endpoint: &str) {
        self.backup_store = Some(cluster_agent::render::backup::StoreTarget {
            endpoint: endpoint.into(),
            bucket: testkit::s3::BACKUP_BUCKET.into(),
        });
    }

    /// The NATS identity of cluster `i`'s agent (made the first time): only the rights an agent has.
    pub fn agent_identity(&mut self, i: usize) -> testkit::NkeyUser {
        if self.clusters[i].identity.is_none() {
            let account = streams::accounts::agent_account(&self.topology.settings, &self.clusters[i].name);
            self.clusters[i].identity = Some(self.nats_server.add_agent_account(&account.to_value()));
        }
        self.clusters[i].identity.clone().expect("made above")
    }

    /// A connection as cluster `i`'s agent, as its binary makes one.
    pub async fn connect_agent(&mut self, i: usize) -> async_nats::Client {
        let identity = self.agent_identity(i);
        identity
            .connect_options()
            .custom_inbox_prefix(streams::cluster_feed::agent_inbox_prefix(&self.clusters[i].name))
            .connect(self.nats_server.address())
            .await
            .expect("connect as the agent")
    }

    /// Starts the agent of cluster `i` with a resync period of the test's choosing.
    pub async fn start_agent_with_resync(&mut self, i: usize, resync: Duration) {
        // The real cluster has the CRD from deploy/crds/, as production does.
        let install_crd = self.clusters[i].kube.is_sim();
        self.launch_agent(i, resync, install_crd).await;
    }

    /// Starts the agent of cluster `i` with `--install-crd` (on the real backend too).
    pub async fn start_agent_installing_crd(&mut self, i: usize) {
        self.launch_agent(i, Duration::from_secs(300), true).await;
    }

    async fn launch_agent(&mut self, i: usize, resync: Duration, install_crd: bool) {
        let nats = self.connect_agent(i).await;
        let cluster = &mut self.clusters[i];
        cluster.metrics = Metrics::default();
        let client = cluster.requests.client(cluster.kube.agent_config().await, &cluster.metrics);
        let config = AgentConfig {
            cluster: cluster.name.clone(),
            client,
            nats,
            settings: Settings::default(),
            concurrency: 16,
            resync,
            install_crd,
            metrics: cluster.metrics.clone(),
            backup_store: self.backup_store.clone(),
            heartbeat: Duration::from_secs(1),
            election: self.election.clone(),
        };
        cluster.agent = Some(tokio::spawn(cluster_agent::run_with(config, self.egress.clone())));
    }

    pub fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.iter().find(|c| c.name == name).expect("cluster")
    }

    pub async fn provision(&self, cluster: &str, name: &str, service: ServiceType, version: &str) -> Uuid {
        provision(&self.commands, cluster, name, service, version).await
    }

    /// Runs `provision` (a fork, say) in project `acme` as the API would: the domain's answer.
    pub async fn provision_as_asked(
        &self,
        provision: domain::ProvisionInstance,
    ) -> Result<u64, streams::ExecuteError<domain::InstanceError>> {
        let metadata = CommandMetadata::new(domain::OperationKind::Provision, "test");
        let id = provision.instance_id;
        let committed =
            self.commands.execute("acme", id, InstanceCommand::Provision(provision), None, metadata).await?;
        Ok(committed.version)
    }

    pub async fn update(&self, id: Uuid, update: UpdateInstance) -> u64 {
        self.command(id, InstanceCommand::Update(update)).await
    }

    /// Runs an update command (any but provision and deprovision); returns the instance version after it.
    pub async fn command(&self, id: Uuid, command: InstanceCommand) -> u64 {
        let metadata = CommandMetadata::new(domain::OperationKind::Update, "test");
        self.commands.execute("acme", id, command, None, metadata).await.expect("command").version
    }

    pub async fn deprovision(&self, id: Uuid) {
        self.commands
            .execute(
                "acme",
                id,
                InstanceCommand::Deprovision,
                None,
                CommandMetadata::new(domain::OperationKind::Deprovision, "test"),
            )
            .await
            .expect("deprovision");
    }

    /// Observed-state events of a cluster, decoded, in order.
    pub async fn observed(&self, cluster: &str) -> Vec<Value> {
        self.intakes_moved().await;
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

    /// Waits for the next observed-state event of `kind` on a live subscription.
    pub async fn next_observed(subscription: &mut async_nats::Subscriber, kind: &str) -> Value {
        use futures::StreamExt as _;
        loop {
            let message = tokio::time::timeout(CONVERGE, subscription.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event within {CONVERGE:?}"))
                .expect("subscription open");
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["event"]["type"] == kind {
                return event;
            }
        }
    }
}

/// Asks for a backup of instance `id` (called `name`, of `service` at `version`, in project acme on c1),
/// as the API would; the backup's id.
pub async fn request_backup(
    backups: &streams::backups::BackupCommands,
    id: Uuid,
    name: &str,
    service: ServiceType,
    version: &str,
) -> Uuid {
    let backup_id = Uuid::now_v7();
    let command = domain::BackupCommand::Request {
        source: domain::BackupSource {
            project: "acme".into(),
            instance_id: id,
            instance_name: name.into(),
            cluster: "c1".into(),
            service,
            version: version.into(),
        },
        trigger: domain::BackupTrigger::Manual,
        instance: domain::backup::InstanceFacts { lifecycle: domain::Lifecycle::Active, ever_ready: true },
    };
    let mut metadata = CommandMetadata::new(domain::OperationKind::Backup, "test");
    metadata.command_id = backup_id;
    backups.execute("acme", id, backup_id, command, metadata).await.expect("backup requested");
    backup_id
}

/// Provisions instance `name` (plan `starter`) in project acme on `cluster`.
pub async fn provision(
    commands: &InstanceCommands,
    cluster: &str,
    name: &str,
    service: ServiceType,
    version: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    let command = InstanceCommand::Provision(ProvisionInstance::new(
        id, "acme", name, service, version, "starter", cluster,
    ));
    commands
        .execute("acme", id, command, None, CommandMetadata::new(domain::OperationKind::Provision, "test"))
        .await
        .expect("provision");
    id
}

/// The objects of namespace `cp-acme`, by `resource key` (`statefulsets.apps`, `configmaps`,
/// `managedinstances.cp.example.com`, …) and name, at one moment.
#[derive(Debug, Default)]
pub struct View {
    pub objects: BTreeMap<(String, String), Value>,
}

impl View {
    pub fn get(&self, resource: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(resource.to_owned(), name.to_owned()))
    }

    pub fn managed_instance(&self, name: &str) -> Option<&Value> {
        self.get("managedinstances.cp.example.com", name)
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.managed_instance(name).and_then(|mi| mi["status"]["phase"].as_str().map(str::to_owned))
    }

    pub fn reason(&self, name: &str) -> Option<String> {
        self.managed_instance(name).and_then(|mi| mi["status"]["reason"].as_str().map(str::to_owned))
    }

    /// Ready at generation `generation`.
    pub fn ready_at(&self, name: &str, generation: u64) -> bool {
        self.managed_instance(name).is_some_and(|mi| {
            mi["status"]["phase"] == "Ready"
                && mi["status"]["observedGeneration"].as_u64() == Some(generation)
        })
    }

    /// Network access applied at generation `generation`, as the agent reports in the status.
    pub fn network_applied_at(&self, name: &str, generation: u64) -> bool {
        self.managed_instance(name)
            .is_some_and(|mi| mi["status"]["applied"]["networkAccess"].as_u64() == Some(generation))
    }

    /// The agent's objects and claims of an instance (pods are the StatefulSet controller's).
    pub fn owned(&self, instance: Uuid) -> Vec<String> {
        let id = instance.to_string();
        self.objects
            .iter()
            .filter(|((resource, _), o)| {
                resource != "pods" && o["metadata"]["labels"]["cp.example.com/instance-id"] == id.as_str()
            })
            .map(|((resource, name), _)| format!("{resource}/{name}"))
            .collect()
    }

    /// The generated password of an instance's credentials Secret (`data` on a real server, which keeps
    /// `stringData` write-only; the simulator keeps it as written).
    pub fn password(&self, name: &str) -> Option<String> {
        use base64::Engine as _;
        let secret = self.get("secrets", &format!("{name}-credentials"))?;
        if let Some(p) = secret["stringData"]["password"].as_str() {
            return Some(p.to_owned());
        }
        let encoded = secret["data"]["password"].as_str()?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()
    }

    pub fn uid(&self, resource: &str, name: &str) -> Option<String> {
        self.get(resource, name).and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
    }

    pub fn names(&self, resource: &str) -> Vec<String> {
        self.objects.keys().filter(|(r, _)| r == resource).map(|(_, n)| n.clone()).collect()
    }
}

impl Cluster {
    pub async fn view(&self) -> View {
        self.kube.view().await
    }

    /// Waits until `ready` holds, re-checked after every change in the cluster; false after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&View) -> bool) -> bool {
        self.kube.wait_until(timeout, ready).await
    }

    /// Asserts that `ready` holds within [`CONVERGE`], printing what the cluster shows otherwise.
    pub async fn converges(&self, what: &str, ready: impl Fn(&View) -> bool) {
        if !self.wait_until(CONVERGE, &ready).await {
            let view = self.view().await;
            let instances: Vec<_> = view
                .names("managedinstances.cp.example.com")
                .iter()
                .map(|n| (n.clone(), view.managed_instance(n).map(|mi| mi["status"].clone())))
                .collect();
            panic!(
                "{what}: not within {CONVERGE:?}; instances: {instances:#?}\nrequests: {:?}",
                self.requests.counts()
            );
        }
    }

    /// Fails unless every request the agent has made is allowed by its RBAC rules
    /// (`cluster_agent::rbac`, the source of `deploy/rbac/`). On the real backend the API server enforces
    /// the same rules; this names the missing permission.
    pub fn assert_permitted(&self) {
        let denied: Vec<String> = self
            .requests
            .counts()
            .into_keys()
            .filter(|key| {
                let (verb, resource) = key.split_once(' ').expect("counts are keyed `verb resource`");
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

    /// Writes (create/patch/update/delete) per resource so far, without watches, lists and gets.
    pub fn writes(&self) -> BTreeMap<String, u64> {
        self.requests
            .counts()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("watch ") && !k.starts_with("list ") && !k.starts_with("get "))
            .collect()
    }
}

pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

//! `cluster-agent`: one per Kubernetes cluster. Wires configuration, NATS, the Kubernetes client and
//! the metrics endpoint together; the agent itself lives in the library.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use cluster_agent::{
    AgentConfig, Metrics, counting_client,
    render::egress::{Egress, EgressSettings},
};
use prometheus_client::registry::Registry;

// glibc malloc showed up as the largest cost in profiles of the write path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cluster agent: converges this cluster's instances.
#[derive(Debug, Parser)]
#[command(version)]
struct Options {
    /// name of the cluster this agent serves (as registered with the control plane)
    #[arg(long, env = "CP_CLUSTER")]
    cluster: String,
    #[command(flatten)]
    nats: streams::connection::NatsArgs,
    /// Kubernetes API server URL, e.g. a simulator's; when absent, KUBECONFIG or in-cluster config
    #[arg(long, env = "CP_KUBE_URL")]
    kube_url: Option<String>,
    /// reconciles in flight at most
    #[arg(long, env = "CP_AGENT_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// seconds between resyncs of every instance against the watch caches
    #[arg(long, env = "CP_AGENT_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// seconds between heartbeats (the control plane marks the cluster unreachable after its silence,
    /// 60 s by default)
    #[arg(long, env = "CP_AGENT_HEARTBEAT_SECONDS", default_value_t = 10)]
    heartbeat_seconds: u64,
    /// run as one of several replicas: elect the converging one through a Lease in this namespace (the
    /// agent's own; in a pod, from the downward API's `metadata.namespace`). Without it this replica
    /// converges alone.
    #[arg(long, env = "CP_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// seconds a standby waits after it last saw the Lease renewed before it takes over; the leader stops
    /// converging two thirds of it after its last renewal
    #[arg(long, env = "CP_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// install the ManagedInstance CRD at start (simulators, dev clusters)
    #[arg(long, env = "CP_INSTALL_CRD")]
    install_crd: bool,
    /// S3 endpoint backups go to, as the cluster's pods reach it (no backups without one)
    /// (The agent holds no store keys: each instance gets its own from the control plane.)
    #[arg(long, env = "CP_BACKUP_STORE_ENDPOINT", requires = "backup_store_bucket")]
    backup_store_endpoint: Option<String>,
    /// bucket backups go to
    #[arg(long, env = "CP_BACKUP_STORE_BUCKET")]
    backup_store_bucket: Option<String>,
    /// address blocks of the backup store as the cluster's pods reach it, comma-separated (the project
    /// namespaces' egress policy admits them on the endpoint's port); required when the endpoint names a
    /// host rather than an address: a NetworkPolicy matches addresses, not names
    #[arg(long, env = "CP_BACKUP_STORE_CIDR", value_delimiter = ',')]
    backup_store_cidr: Vec<ipnet::IpNet>,
    /// address blocks of the Kubernetes API server as pods' packets carry them, comma-separated: the
    /// addresses of the `default/kubernetes` EndpointSlice (`kubectl get endpointslice -n default -l
    /// kubernetes.io/service-name=kubernetes`), not the Service's cluster IP, which kube-proxy rewrites.
    /// CloudNativePG's instance manager talks to the API server; without this, PostgreSQL does not start
    /// under a network plugin that enforces NetworkPolicies
    #[arg(long, env = "CP_API_SERVER_CIDR", value_delimiter = ',')]
    api_server_cidr: Vec<ipnet::IpNet>,
    /// the API server's port as pods' packets carry it (the `default/kubernetes` EndpointSlice's port)
    #[arg(long, env = "CP_API_SERVER_PORT", default_value_t = cluster_agent::render::egress::DEFAULT_API_SERVER_PORT)]
    api_server_port: u16,
    /// address of /metrics and /healthz
    #[arg(long, env = "CP_AGENT_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,async_nats=warn")),
        )
        .init();
    let options = Options::parse();
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let kube_config = match &options.kube_url {
        Some(url) => kube::Config::new(url.parse().context("parsing --kube-url")?),
        None => kube::Config::infer().await.context("reading KUBECONFIG or in-cluster configuration")?,
    };
    let client = counting_client(kube_config, &metrics)?;
    let connect = async_nats::ConnectOptions::new()
        .name(format!("cluster-agent-{}", options.cluster))
        // Its identity may receive replies on this prefix only (`streams::cluster_feed`).
        .custom_inbox_prefix(streams::cluster_feed::agent_inbox_prefix(&options.cluster))
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)));
    let nats = options.nats.connect(connect).await?;

    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    tracing::info!(address = %listener.local_addr()?, cluster = %options.cluster, "agent serving /metrics");
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" })).route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let egress = EgressSettings {
        store_blocks: options.backup_store_cidr,
        api_server_blocks: options.api_server_cidr,
        api_server_port: options.api_server_port,
    };
    let backup_store = options
        .backup_store_endpoint
        .zip(options.backup_store_bucket)
        .map(|(endpoint, bucket)| cluster_agent::render::backup::StoreTarget { endpoint, bucket });
    // Refused before anything starts: a block overlapping link-local addresses, and a store named by a
    // host without its blocks (its backups could not reach it under an enforcing network plugin).
    if Egress::new(&egress, backup_store.as_ref())?.store_unreachable {
        anyhow::bail!(
            "the backup store endpoint names a host: give its address blocks with --backup-store-cidr"
        );
    }
    // The replica's identity: its pod's name (HOSTNAME in a pod) and process, unique among replicas.
    let election = options.leader_election_namespace.map(|namespace| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cluster-agent".into());
        let duration = Duration::from_secs(options.lease_duration_seconds.max(3));
        cluster_agent::leader::Election {
            lease_duration: duration,
            renew_deadline: duration * 2 / 3,
            retry_period: (duration / 7).max(Duration::from_millis(500)),
            ..cluster_agent::leader::Election::new(namespace, format!("{host}-{}", std::process::id()))
        }
    });
    cluster_agent::run_with(
        AgentConfig {
            cluster: options.cluster,
            client,
            nats,
            settings: streams::Settings::default(),
            concurrency: options.concurrency,
            resync: Duration::from_secs(options.resync_seconds),
            install_crd: options.install_crd,
            metrics,
            backup_store,
            heartbeat: Duration::from_secs(options.heartbeat_seconds.max(1)),
            election,
        },
        egress,
    )
    .await
}

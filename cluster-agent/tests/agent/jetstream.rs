//! The agent never administers JetStream: it reads its cluster's feed and publishes observed state,
//! whatever the topology the control plane chose, with an identity that can do nothing else.

use crate::common;

use std::time::Duration;

use cluster_agent::{AgentConfig, Metrics};
use common::{CONVERGE, Requests};
use domain::ServiceType;
use k8s_sim::{Simulator, SimulatorOptions};
use streams::{Settings, Topology, cluster_feed, instances::InstanceCommands};
use testkit::{NatsCluster, NatsServer, Sync};
use tokio::sync::mpsc;

/// Whether instance `db`'s ManagedInstance reports Ready in `sim` within the convergence bound.
async fn db_ready(sim: &Simulator) -> bool {
    sim.wait_until(CONVERGE, |store| {
        let ty = store.resource_type("cp.example.com", "v1alpha1", "managedinstances");
        ty.and_then(|ty| store.get(&ty, "cp-acme", "db")).is_some_and(|mi| mi["status"]["phase"] == "Ready")
    })
    .await
}

/// The configuration of cluster c1's agent, installing its CRD.
fn agent_config(
    client: kube::Client,
    nats: async_nats::Client,
    settings: &Settings,
    metrics: Metrics,
) -> AgentConfig {
    AgentConfig {
        cluster: "c1".into(),
        client,
        nats,
        settings: settings.clone(),
        concurrency: 4,
        resync: Duration::from_secs(300),
        install_crd: true,
        metrics,
        backup_store: None,
        heartbeat: Duration::from_secs(10),
        election: None,
    }
}

/// Starts an agent (with default settings: one replica) on `agent_nats`, provisions one instance through
/// `topology` and waits until the agent reports it ready in its simulated cluster.
async fn an_instance_converges(topology: &Topology, agent_nats: async_nats::Client) {
    let sim =
        Simulator::new(SimulatorOptions { ready_delay: Duration::from_millis(20), ..Default::default() });
    let address = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let metrics = Metrics::default();
    let client =
        Requests::default().client(kube::Config::new(format!("http://{address}").parse().unwrap()), &metrics);
    cluster_feed::apply(&topology.jetstream, &topology.settings, "c1").await.expect("the cluster's feed");
    let agent =
        tokio::spawn(cluster_agent::run(agent_config(client, agent_nats, &topology.settings, metrics)));
    let commands = InstanceCommands::new(topology, 100);
    common::provision(&commands, "c1", "db", ServiceType::Grafana, "11.6").await;
    let ready = db_ready(&sim).await;
    assert!(!agent.is_finished(), "the agent stopped: {:?}", agent.await);
    assert!(ready, "the instance did not become ready");
    agent.abort();
}

#[tokio::test]
async fn an_agent_leaves_a_three_replica_topology_as_it_is() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let settings = Settings { replicas: 3, ..Settings::default() };
    let account = streams::accounts::agent_account(&settings, "c1").to_value();
    let (cluster, identities) = NatsCluster::start_with_agent_accounts(Sync::Default, &[account]);
    let client = cluster.connect().await;
    let js = async_nats::jetstream::new(client.clone());
    let topology = settings.apply_when_placed(&js, Duration::from_secs(30)).await.expect("topology");
    let mut events = topology.events.clone();
    let before = events.info().await.unwrap().config.clone();
    assert_eq!(before.num_replicas, 3);
    let agent = identities[0]
        .connect_options()
        .custom_inbox_prefix(cluster_feed::agent_inbox_prefix("c1"))
        .connect(cluster.addresses().as_slice())
        .await
        .unwrap();
    an_instance_converges(&topology, agent).await;
    let after = events.info().await.unwrap().config.clone();
    assert_eq!(after, before, "the agent changed the event stream's configuration");
    for stream in [
        format!("KV_{}", settings.names_bucket),
        format!("KV_{}", settings.idempotency_bucket),
        format!("KV_{}", settings.read_models_bucket),
        cluster_feed::desired_stream_name(&settings, "c1"),
    ] {
        let replicas = js.get_stream(&stream).await.unwrap().info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{stream}");
    }
}

/// Server errors a connection receives (permission violations among them), as text.
fn errors_of(
    options: async_nats::ConnectOptions,
) -> (async_nats::ConnectOptions, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                let _ = tx.send(error.to_string());
            }
        }
    });
    (options, rx)
}

/// Waits (bounded) for the server to refuse `what`, e.g. `Publish to "cp.evt.c1.x"`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let wanted = format!("Permissions Violation for {what}");
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "nats-server did not refuse {what}");
}

#[tokio::test]
async fn an_agent_identity_reaches_its_own_cluster_and_nothing_else() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let server = NatsServer::start();
    let settings = Settings::default();
    let topology = settings.apply(&async_nats::jetstream::new(server.connect().await)).await.unwrap();
    for cluster in ["c1", "c2"] {
        cluster_feed::apply(&topology.jetstream, &settings, cluster).await.unwrap();
    }
    let commands = InstanceCommands::new(&topology, 100);
    let elsewhere = common::provision(&commands, "c2", "other", ServiceType::Grafana, "11.6").await;
    let identity = server.add_agent_account(&streams::accounts::agent_account(&settings, "c1").to_value());
    let agent_options =
        || identity.connect_options().custom_inbox_prefix(cluster_feed::agent_inbox_prefix("c1"));

    // With exactly these rights, an agent does its whole job.
    let agent = agent_options().connect(server.address()).await.unwrap();
    an_instance_converges(&topology, agent).await;

    let (options, mut errors) = errors_of(agent_options());
    let agent = options.connect(server.address()).await.unwrap();
    let mut events = topology.events.clone();
    let stored = events.info().await.unwrap().state.messages;
    let c2 = cluster_feed::desired_stream_name(&settings, "c2");
    let c1 = cluster_feed::desired_stream_name(&settings, "c1");
    let forbidden = [
        // another cluster's facts and feed
        format!("cp.obs.c2.acme.{elsewhere}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{c2}.cp-agent-c2"),
        format!("$JS.API.CONSUMER.INFO.{c2}.cp-agent-c2"),
        format!("$JS.API.CONSUMER.RESET.{c2}.cp-agent-c2"),
        // decisions: agents never write cp.evt, not even their own cluster's
        format!("cp.evt.c1.acme.{elsewhere}"),
        // stream and consumer administration, reads that name subjects in the body, buckets
        format!("$JS.API.STREAM.CREATE.{c1}"),
        format!("$JS.API.STREAM.UPDATE.{c1}"),
        format!("$JS.API.STREAM.DELETE.{}", settings.events_stream),
        format!("$JS.API.STREAM.PURGE.{c1}"),
        format!("$JS.API.CONSUMER.CREATE.{c1}.mine.cp.evt.c1.>"),
        format!("$JS.API.CONSUMER.DELETE.{c1}.cp-agent-c1"),
        format!("$JS.API.DIRECT.GET.{}", settings.events_stream),
        format!("$JS.API.STREAM.MSG.GET.{}", settings.events_stream),
        format!("$KV.{}.c9", settings.clusters_bucket),
    ];
    for subject in &forbidden {
        agent.publish(subject.clone(), "{}".into()).await.unwrap();
        agent.flush().await.unwrap();
        refused(&mut errors, &format!("Publish to \"{subject}\"")).await;
    }
    for subject in ["cp.evt.>", "cp.obs.>", "_INBOX.>", "$JS.ACK.>"] {
        // A refused subscription is the server's to refuse; the client sends it either way.
        let _subscription = agent.subscribe(subject).await.unwrap();
        agent.flush().await.unwrap();
        refused(&mut errors, &format!("Subscription to \"{subject}\"")).await;
    }
    assert_eq!(
        events.info().await.unwrap().state.messages,
        stored,
        "nothing the agent was refused was stored"
    );
    let info = topology
        .jetstream
        .get_stream(&c2)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("cp-agent-c2")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.delivered.stream_sequence, 0, "c2's consumer delivered nothing to c1's agent");
}

/// An agent that starts before its cluster's API server answers keeps asking, and converges once it does.
#[tokio::test]
async fn an_agent_started_before_its_api_server_answers_converges_once_it_does() {
    let server = NatsServer::start();
    let settings = Settings::default();
    let topology = settings.apply(&async_nats::jetstream::new(server.connect().await)).await.unwrap();
    cluster_feed::apply(&topology.jetstream, &settings, "c1").await.unwrap();
    // The API server's address answers nothing yet: each connection is accepted and dropped at once.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let metrics = Metrics::default();
    let client = Requests::default()
        .client(kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap()), &metrics);
    let identity = server.add_agent_account(&streams::accounts::agent_account(&settings, "c1").to_value());
    let agent_nats = identity
        .connect_options()
        .custom_inbox_prefix(cluster_feed::agent_inbox_prefix("c1"))
        .connect(server.address())
        .await
        .unwrap();
    let config = agent_config(client, agent_nats, &settings, metrics.clone());
    let agent = tokio::spawn(cluster_agent::run(config));
    // The agent's attempts, one connection each: it tried, failed, and tried again.
    for attempt in 0..3 {
        let accepted = tokio::time::timeout(CONVERGE, silent.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "the agent did not try again (attempt {attempt})");
        assert!(!agent.is_finished(), "the agent gave up: {:?}", agent.await);
    }
    drop(silent);
    let commands = InstanceCommands::new(&topology, 100);
    common::provision(&commands, "c1", "db", ServiceType::Grafana, "11.6").await;
    let sim =
        Simulator::new(SimulatorOptions { ready_delay: Duration::from_millis(20), ..Default::default() });
    sim.serve(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let ready = db_ready(&sim).await;
    assert!(!agent.is_finished(), "the agent stopped: {:?}", agent.await);
    assert!(ready, "the instance did not become ready once the API server answered");
    agent.abort();
}

//! The agent never administers JetStream: it consumes its cluster's subjects and publishes observed
//! state, whatever the topology the control plane chose, with credentials that cannot change streams.

mod common;

use std::time::Duration;

use cluster_agent::{AgentConfig, Metrics};
use common::{CONVERGE, Requests};
use domain::ServiceType;
use k8s_sim::{Simulator, SimulatorOptions};
use streams::{Settings, Topology, instances::InstanceCommands};
use testkit::{NatsCluster, NatsServer, Sync};

/// Starts an agent (with default settings: one replica) on `agent_nats`, provisions one instance through
/// `topology` and waits until the agent reports it ready in its simulated cluster.
async fn an_instance_converges(topology: &Topology, agent_nats: async_nats::Client) {
    let sim =
        Simulator::new(SimulatorOptions { ready_delay: Duration::from_millis(20), ..Default::default() });
    let address = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let metrics = Metrics::default();
    let client =
        Requests::default().client(kube::Config::new(format!("http://{address}").parse().unwrap()), &metrics);
    let agent = tokio::spawn(cluster_agent::run(AgentConfig {
        cluster: "c1".into(),
        client,
        nats: agent_nats,
        settings: Settings::default(),
        concurrency: 4,
        resync: Duration::from_secs(300),
        install_crd: true,
        metrics,
    }));
    let commands = InstanceCommands::new(topology, 100);
    common::provision(&commands, "c1", "db", ServiceType::Grafana, "11.6").await;
    let ready = sim
        .wait_until(CONVERGE, |store| {
            let ty = store.resource_type("cp.example.com", "v1alpha1", "managedinstances");
            ty.and_then(|ty| store.get(&ty, "cp-acme", "db"))
                .is_some_and(|mi| mi["status"]["phase"] == "Ready")
        })
        .await;
    assert!(!agent.is_finished(), "the agent stopped: {:?}", agent.await);
    assert!(ready, "the instance did not become ready");
    agent.abort();
}

#[tokio::test]
async fn an_agent_leaves_a_three_replica_topology_as_it_is() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let cluster = NatsCluster::start_with(Sync::Default);
    let client = async_nats::connect(cluster.urls().as_slice()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let settings = Settings { replicas: 3, ..Settings::default() };
    let topology = settings.apply_when_placed(&js, Duration::from_secs(30)).await.expect("topology");
    let mut events = topology.events.clone();
    let before = events.info().await.unwrap().config.clone();
    assert_eq!(before.num_replicas, 3);
    an_instance_converges(&topology, client.clone()).await;
    let after = events.info().await.unwrap().config.clone();
    assert_eq!(after, before, "the agent changed the event stream's configuration");
    for bucket in [&settings.names_bucket, &settings.idempotency_bucket, &settings.read_models_bucket] {
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        assert_eq!(stream.info().await.unwrap().config.num_replicas, 3, "{bucket}");
    }
}

#[tokio::test]
async fn an_agent_whose_credentials_cannot_create_or_update_streams_works() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    // The agent may do anything but administer streams (issue: per-cluster least privilege comes with
    // the security work; this proves the agent needs no stream administration at all).
    let server = NatsServer::start_with_config(
        Sync::Default,
        r#"
authorization {
  users = [
    { user: admin, password: admin }
    { user: agent, password: agent, permissions: {
        publish: { allow: [">"], deny: ["$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>",
                                        "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"] }
        subscribe: { allow: [">"] } } }
  ]
}
"#,
    );
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into())
        .connect(server.url())
        .await
        .unwrap();
    let topology = Settings::default().apply(&async_nats::jetstream::new(admin)).await.unwrap();
    let agent = async_nats::ConnectOptions::with_user_and_password("agent".into(), "agent".into())
        .connect(server.url())
        .await
        .unwrap();
    // The credentials really are refused stream administration.
    let refused = Settings::default().apply(&async_nats::jetstream::new(agent.clone())).await;
    assert!(refused.is_err(), "the agent's credentials may administer streams");
    an_instance_converges(&topology, agent).await;
}

//! Applying the topology at every start never takes a setting away, not even for a moment.

use futures::StreamExt as _;
use streams::Settings;
use testkit::NatsServer;

/// Every process applies the topology at start. On an existing deployment that must not turn atomic
/// batches off on the name and idempotency buckets, even briefly: a group committer refused in that
/// window stops batching for the rest of its life. Every stream update the second apply sends is
/// watched on the wire (a plain subscriber on the JetStream API subject sees each request).
#[tokio::test]
async fn reapplying_the_topology_never_turns_atomic_batches_off() {
    let server = NatsServer::start();
    let client = server.connect().await;
    let js = async_nats::jetstream::new(client.clone());
    let settings = Settings::default();
    settings.apply(&js).await.expect("first apply");
    let mut requests = client.subscribe("$JS.API.STREAM.UPDATE.>").await.unwrap();
    client.flush().await.unwrap();

    settings.apply(&js).await.expect("second apply");
    // One connection delivers in order: once this barrier arrives, every update request sent before it has.
    client.publish("$JS.API.STREAM.UPDATE.BARRIER", "{}".into()).await.unwrap();
    client.flush().await.unwrap();
    let mut turned_off = Vec::new();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), requests.next())
            .await
            .expect("the barrier")
            .unwrap();
        let stream = message.subject.as_str().trim_start_matches("$JS.API.STREAM.UPDATE.").to_owned();
        if stream == "BARRIER" {
            break;
        }
        let config: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        // `allow_atomic` on the wire (omitted when false).
        if config["allow_atomic"] != true {
            turned_off.push(stream);
        }
    }
    for bucket in [&settings.names_bucket, &settings.idempotency_bucket] {
        let stream = format!("KV_{bucket}");
        assert!(
            !turned_off.contains(&stream),
            "{stream} was updated with atomic batches off: {turned_off:?}"
        );
        let mut handle = js.get_stream(&stream).await.unwrap();
        assert!(handle.info().await.unwrap().config.allow_atomic_publish, "{stream}");
    }
}

/// A cluster's feed made before it was `persist_mode: async` keeps working when the control plane starts
/// (its identity may not delete streams, and nats-server refuses to change the mode in place), and
/// `cp-api --migrate` makes it again, async, holding the newest message of every instance of its cluster
/// once more, with its agent's consumer.
#[tokio::test]
async fn migrating_remakes_a_feed_of_another_persist_mode_and_it_holds_every_instance_again() {
    use async_nats::jetstream::stream::PersistenceMode;
    use streams::{cluster_feed, instances::instance_subject};

    let server = NatsServer::start();
    let js = async_nats::jetstream::new(server.connect().await);
    let settings = Settings::default();
    let topology = settings.apply(&js).await.expect("apply");
    let mut before = cluster_feed::desired_stream_config(&settings, "c1");
    before.persist_mode = None;
    js.create_stream(before).await.expect("a feed as an older version made it");
    topology.clusters.put("c1", r#"{"region":"eu"}"#.into()).await.unwrap();
    let instances = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    for (i, id) in instances.iter().enumerate() {
        for version in 0..=i {
            js.publish(instance_subject("c1", "acme", *id), format!("{version}").into())
                .await
                .unwrap()
                .await
                .expect("stored");
        }
    }
    js.publish(instance_subject("c2", "acme", uuid::Uuid::new_v4()), "other cluster".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let name = cluster_feed::desired_stream_name(&settings, "c1");
    let persist_mode = |js: async_nats::jetstream::Context| {
        let name = name.clone();
        async move { js.get_stream(&name).await.unwrap().info().await.unwrap().config.persist_mode }
    };

    cluster_feed::apply(&js, &settings, "c1").await.expect("apply keeps the old persist mode");
    assert_ne!(persist_mode(js.clone()).await, Some(PersistenceMode::Async));

    let remade = cluster_feed::migrate_registered(&topology).await.expect("migrate");
    assert_eq!(remade, ["c1"]);
    assert_eq!(persist_mode(js.clone()).await, Some(PersistenceMode::Async));
    let mut feed = js.get_stream(&name).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while feed.info().await.unwrap().state.messages < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the new feed never sourced both instances");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (i, id) in instances.iter().enumerate() {
        let newest =
            feed.get_last_raw_message_by_subject(&instance_subject("c1", "acme", *id)).await.unwrap();
        assert_eq!(newest.payload, format!("{i}").as_bytes(), "instance {i}'s newest message");
    }
    assert_eq!(feed.info().await.unwrap().state.messages, 2, "only its own cluster's newest messages");
    feed.consumer_info(cluster_feed::agent_consumer_name("c1")).await.expect("the agent's consumer");
    assert!(cluster_feed::migrate_registered(&topology).await.unwrap().is_empty(), "nothing more to migrate");
}

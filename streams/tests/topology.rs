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

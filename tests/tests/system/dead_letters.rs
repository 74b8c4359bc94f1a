//! What readers could not use, as an operator sees it: `GET /v1/admin/dead-letters`.

use axum::http::{Method, StatusCode};
use system_tests::{ACME_EDITOR_TOKEN, TestApi};

#[tokio::test]
async fn a_message_the_projector_cannot_read_is_listed_for_operators_and_later_writes_still_apply() {
    let api = TestApi::start().await;
    let js = async_nats::jetstream::new(api.nats_server.connect().await);
    let subject = format!("cp.evt.eu-1.acme.{}", uuid::Uuid::now_v7());
    let ack = js.publish(subject.clone(), "{ not json".into()).await.unwrap().await.unwrap();
    // A write after it: once the read models show it, the projector is past the bad message.
    let created = api.provision("acme", "after").await;
    let shown = api.get_after("/v1/projects/acme/instances?name=after", [&created]).await;
    assert_eq!(shown.body["items"].as_array().map(Vec::len), Some(1), "{}", shown.body);

    let page = api.call(Method::GET, "/v1/admin/dead-letters", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let items = page.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", page.body);
    assert_eq!(items[0]["reader"], "projector");
    assert_eq!(items[0]["subject"], subject.as_str());
    assert_eq!(items[0]["stream_sequence"], ack.sequence);
    assert_eq!(items[0]["payload"], "{ not json");
    assert!(items[0]["reason"].as_str().is_some_and(|r| r.contains("malformed")), "{}", items[0]);

    let after = items[0]["sequence"].as_u64().unwrap();
    let next = api.call(Method::GET, &format!("/v1/admin/dead-letters?after={after}"), None, &[]).await;
    assert_eq!(next.body["items"].as_array().map(Vec::len), Some(0), "nothing after it");
    let editor = format!("Bearer {ACME_EDITOR_TOKEN}");
    let refused = api.call(Method::GET, "/v1/admin/dead-letters", None, &[("authorization", &editor)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "operators only");
    let bad = api.call(Method::GET, "/v1/admin/dead-letters?limit=0", None, &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["errors"][0]["field"], "limit");
}

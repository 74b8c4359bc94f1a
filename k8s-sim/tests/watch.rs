//! Watch semantics over HTTP: resume from a resourceVersion, bookmarks, and 410 Gone when too old.

use std::time::Duration;

use k8s_sim::{Simulator, SimulatorOptions, store::HISTORY};
use serde_json::{Value, json};

async fn start() -> (Simulator, String) {
    let sim = Simulator::new(SimulatorOptions {
        ready_delay: Duration::ZERO,
        bookmark_interval: Duration::from_millis(100),
        ..SimulatorOptions::default()
    });
    let address = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, format!("http://{address}"))
}

/// The first `n` lines of a watch.
async fn watch_lines(url: &str, n: usize) -> Vec<Value> {
    let mut response = reqwest::get(url).await.unwrap();
    let mut buffer = Vec::new();
    let mut lines = Vec::new();
    while lines.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("watch line in time")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
    }
    lines
}

#[tokio::test]
async fn a_watch_resumes_after_its_resource_version_and_sends_bookmarks() {
    let (sim, base) = start().await;
    let rv = {
        let mut store = sim.store();
        let cm = store.resource_type("", "v1", "configmaps").unwrap();
        let first = store.create(&cm, "default", json!({"metadata": {"name": "a"}})).unwrap();
        store.create(&cm, "default", json!({"metadata": {"name": "b"}})).unwrap();
        first["metadata"]["resourceVersion"].as_str().unwrap().to_owned()
    };
    let lines = watch_lines(
        &format!("{base}/api/v1/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
        2,
    )
    .await;
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "b", "only changes after the given resourceVersion");
    assert_eq!(lines[1]["type"], "BOOKMARK");
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_gone() {
    let (sim, base) = start().await;
    {
        let mut store = sim.store();
        let cm = store.resource_type("", "v1", "configmaps").unwrap();
        for i in 0..=HISTORY {
            store.create(&cm, "default", json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        }
    }
    let lines = watch_lines(&format!("{base}/api/v1/configmaps?watch=true&resourceVersion=2"), 1).await;
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
}

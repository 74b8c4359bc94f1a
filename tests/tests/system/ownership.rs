//! One owner per wire format and per name (ARCHITECTURE.md, *Invariants*): every subject, consumer,
//! stream and bucket name is built by a function in `streams`, and every message the control plane writes
//! has one Rust type there (`EventBatch`, `ObservedMessage`). This reads the production sources of every
//! other crate and fails on a hand-built subject or consumer, or a message assembled field by field.
//!
//! Tests may still build malformed messages on purpose; `xtask`'s raw-publish baseline imitates the wire
//! form to measure JetStream alone. Neither is scanned.

use std::path::{Path, PathBuf};

/// Crates whose `src/` must take every JetStream name and message type from `streams`.
const SCANNED: &[&str] =
    &["api/src", "projections/src", "cluster-agent/src", "domain/src", "k8s-sim/src", "tests/src"];

/// What must not appear there, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("\"cp.evt", "an instance event subject: use streams::instances"),
    ("\"cp.obs", "an observed-state subject: use streams::instances / streams::observed"),
    ("\"cp-agent", "an agent consumer name: use streams::cluster_feed::agent_consumer_name"),
    ("\"cp.rpc", "a request subject: use streams::credentials"),
    ("\"cp.dlq", "a dead-letter subject: use streams::dead_letters"),
    ("\"cp.intake", "a cluster's intake subject: use streams::intake"),
    ("\"CP_INTAKE_{", "a cluster's intake stream: use streams::intake"),
    ("\"$JS.", "a JetStream API subject: JetStream is administered by streams"),
    ("\"KV_", "a bucket's stream name: use streams::topology"),
    ("INSTANCE_EVENT_PREFIX", "a subject assembled from a prefix: use a subject function in streams"),
    ("OBSERVED_PREFIX", "a subject assembled from a prefix: use a subject function in streams"),
    ("create_consumer(", "a consumer configured outside streams"),
    ("get_or_create_consumer(", "a consumer configured outside streams"),
    ("create_stream(", "a stream configured outside streams"),
    ("create_key_value(", "a bucket configured outside streams"),
    (
        "\"desired_generation\"",
        "an observed-state message built by hand: use streams::observed::ObservedMessage",
    ),
    ("\"aggregate_id\"", "an event batch built by hand: use streams::EventBatch"),
    ("\"first_version\"", "an event batch built by hand: use streams::EventBatch"),
    ("\"command_id\"", "command metadata built by hand: use streams::CommandMetadata"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Violations in `text` (one file), as `line: what — why`.
fn violations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (pattern, why) in FORBIDDEN {
            if code.contains(pattern) {
                found.push(format!("{}: {pattern} — {why}", number + 1));
            }
        }
    }
    found
}

#[test]
fn subjects_consumers_and_messages_are_built_only_in_streams() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 40, "found only {} source files under {SCANNED:?}", files.len());
    let mut report = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for violation in violations(&text) {
            report.push(format!("{}:{violation}", file.strip_prefix(&root).unwrap_or(&file).display()));
        }
    }
    assert!(
        report.is_empty(),
        "JetStream names or own messages built outside streams:\n{}",
        report.join("\n")
    );
}

/// The check catches what it is for (so that a broken scan cannot pass silently).
#[test]
fn the_scan_finds_a_hand_built_subject_and_message() {
    let sample = r#"
        let subject = format!("cp.obs.{cluster}.{project}.{id}"); // built by hand
        let body = json!({"desired_generation": 3, "event": event});
        // "cp.evt" in a comment is fine
    "#;
    let found = violations(sample);
    assert_eq!(found.len(), 2, "{found:?}");
}

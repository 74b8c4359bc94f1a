//! What the agent applied, as digests: each rendered object (`Kind/name`) with the SHA-256 of its
//! canonical JSON (keys sorted), reported in `ObservedState::rendered` once a generation is applied. A dry
//! run of another renderer over the event stream (`crate::dry_run`) renders the same desired state and
//! names the objects whose digest differs. Secrets are left out: their digest would be of a password.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Child, ChildKind};

/// The digest of every object `children` holds, Secrets excepted, by `Kind/name`.
pub fn digests(children: &[Child]) -> BTreeMap<String, String> {
    children
        .iter()
        .filter(|c| c.kind != ChildKind::Secret)
        .map(|c| (format!("{}/{}", c.kind.kind(), c.name), digest(&c.object)))
        .collect()
}

/// The SHA-256 of `object`'s canonical JSON, hex.
pub fn digest(object: &Value) -> String {
    let mut hash = Sha256::new();
    write_canonical(object, &mut hash);
    hex::encode(hash.finalize())
}

/// Feeds `value` as JSON with object keys sorted, whatever order the map keeps them in.
fn write_canonical(value: &Value, hash: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hash.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    hash.update(b",");
                }
                hash.update(Value::String(key.clone()).to_string().as_bytes());
                hash.update(b":");
                write_canonical(&map[key], hash);
            }
            hash.update(b"}");
        }
        Value::Array(items) => {
            hash.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hash.update(b",");
                }
                write_canonical(item, hash);
            }
            hash.update(b"]");
        }
        scalar => hash.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_digest_ignores_key_order_and_sees_every_value() {
        let a = json!({"a": 1, "b": {"c": [1, "x"], "d": null}});
        let b: Value = serde_json::from_str(r#"{"b": {"d": null, "c": [1, "x"]}, "a": 1}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&json!({"a": 1, "b": {"c": [1, "y"], "d": null}})));
        assert_ne!(digest(&a), digest(&json!({"a": 1, "b": {"c": ["x", 1], "d": null}})));
    }

    #[test]
    fn secrets_are_left_out() {
        let child = |kind, name: &str| Child { kind, name: name.into(), object: json!({"n": name}) };
        let all = digests(&[child(ChildKind::Service, "db"), child(ChildKind::Secret, "db-credentials")]);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["Service/db"]);
    }
}

//! The JSON semantics of Kubernetes writes, as the API server applies them: merge patches, pruning of
//! fields a manager stopped applying, the update validation of the built-in types, label selectors and
//! quantities.

use serde_json::{Map, Value};

use super::{ResourceType, StatusError};

pub(super) fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

pub(super) fn name_of(object: &Value) -> Option<String> {
    meta(object)["name"].as_str().map(str::to_owned)
}

/// Deep merge (JSON merge patch, RFC 7386): objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// A Secret's `stringData` is write-only: the API server moves each entry into `data` (base64), over
/// any entry of the same key, and stores no `stringData` (k8s.io/kubernetes `pkg/apis/core/v1/conversion.go`,
/// `Convert_v1_Secret_To_core_Secret`: "StringData overwrites Data").
pub(super) fn fold_string_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = Value::Object(Map::new());
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        secret["data"][key.as_str()] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Removes from `target` the fields a manager applied before (`previous`) but no longer applies (`now`).
pub(super) fn prune(target: &mut Value, previous: &Value, now: &Value) {
    let (Some(target), Some(previous)) = (target.as_object_mut(), previous.as_object()) else { return };
    for (key, old) in previous {
        match now.get(key) {
            None => {
                target.remove(key);
            }
            Some(new) => {
                if let Some(child) = target.get_mut(key) {
                    prune(child, old, new);
                }
            }
        }
    }
}

/// The apiserver's update validation for the fields that cannot change, as far as the agent meets it.
pub(super) fn validate_update(ty: &ResourceType, old: &Value, new: &Value) -> Result<(), StatusError> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    match ty.key().as_str() {
        "statefulsets.apps" => {
            // apps/v1 validation: everything in spec but these is immutable (volumeClaimTemplates included).
            let mutable = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let fixed = |o: &Value| {
                let mut spec = o["spec"].clone();
                if let Some(spec) = spec.as_object_mut() {
                    spec.retain(|k, _| !mutable.contains(&k.as_str()));
                }
                spec
            };
            if fixed(old) != fixed(new) {
                return Err(StatusError::new(
                    422,
                    "Invalid",
                    format!(
                        "StatefulSet.apps \"{name}\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
                    ),
                ));
            }
        }
        "persistentvolumeclaims" => {
            let request = |o: &Value| {
                quantity_bytes(o["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or("0"))
            };
            if request(new) < request(old) {
                return Err(StatusError::new(
                    422,
                    "Invalid",
                    format!(
                        "PersistentVolumeClaim \"{name}\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Bytes of a Kubernetes quantity such as `10Gi`, `500M` or `1073741824`; 0 when unreadable.
pub fn quantity_bytes(quantity: &str) -> u128 {
    let split = quantity.find(|c: char| !c.is_ascii_digit()).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let factor: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return 0,
    };
    number.parse::<u128>().map_or(0, |n| n * factor)
}

pub(super) fn without_volatile(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy["metadata"].as_object_mut() {
        for key in ["resourceVersion", "generation", "managedFields"] {
            meta.remove(key);
        }
    }
    copy
}

pub(super) fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// Whether `labels` satisfy a Kubernetes label selector (`a=b,c!=d,e in (x,y),f,!g`).
pub fn selector_matches(selector: &str, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            label(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k) == Some(v.trim())
        } else if let Some((k, set)) = term.split_once(" notin ") {
            let set: Vec<&str> =
                set.trim().trim_matches(|c| c == '(' || c == ')').split(',').map(str::trim).collect();
            label(k).is_none_or(|v| !set.contains(&v))
        } else if let Some((k, set)) = term.split_once(" in ") {
            let set: Vec<&str> =
                set.trim().trim_matches(|c| c == '(' || c == ')').split(',').map(str::trim).collect();
            label(k).is_some_and(|v| set.contains(&v))
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(term).is_some()
        }
    })
}

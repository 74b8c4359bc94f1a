//! Upcasters: read an event stored in an older schema as its current form (cqrs-es's
//! [`EventUpcaster`]). One per payload change, from exactly one schema to the next, so they chain.

use std::sync::LazyLock;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// Turns one schema of one event type into the next.
struct SchemaUpcaster {
    event_type: &'static str,
    from: &'static str,
    to: &'static str,
    upcast: fn(Value) -> Value,
}

impl EventUpcaster for SchemaUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == self.from
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.payload = (self.upcast)(event.payload);
        event.event_version = self.to.to_owned();
        event
    }
}

/// `ConfigurationChanged` 1 → 2: schema 1 did not say which parameters changed. Every parameter of the
/// resulting configuration counts as changed, which errs toward applying (and restarting) too much rather
/// than missing a change; a parameter the change removed is not known, and was already absent from
/// what the cluster is told to run.
fn configuration_changed_1_to_2(mut payload: Value) -> Value {
    if let Value::Object(fields) = &mut payload {
        let changed: Vec<Value> = match fields.get("config") {
            Some(Value::Object(config)) => config.keys().cloned().map(Value::String).collect(),
            _ => Vec::new(),
        };
        fields.entry("changed").or_insert(Value::Array(changed));
    }
    payload
}

/// `ConfigurationChanged` 2 → 3: schema 2 did not say which changed parameters take a restart. Every one
/// counts as taking one: a reader then waits for a restart that may not come rather than report a
/// restart parameter applied before it is.
fn configuration_changed_2_to_3(mut payload: Value) -> Value {
    if let Value::Object(fields) = &mut payload {
        let changed = fields.get("changed").cloned().unwrap_or(Value::Array(Vec::new()));
        fields.entry("restart").or_insert(changed);
    }
    payload
}

/// Every upcaster of instance events, in the order they apply.
pub fn upcasters() -> &'static [Box<dyn EventUpcaster>] {
    static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(|| {
        vec![
            Box::new(SchemaUpcaster {
                event_type: "ConfigurationChanged",
                from: "1",
                to: "2",
                upcast: configuration_changed_1_to_2,
            }),
            Box::new(SchemaUpcaster {
                event_type: "ConfigurationChanged",
                from: "2",
                to: "3",
                upcast: configuration_changed_2_to_3,
            }),
        ]
    });
    &UPCASTERS
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::InstanceEvent;

    fn stored(event_type: &str, version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            "acme.x".into(),
            2,
            "Instance".into(),
            event_type.into(),
            version.into(),
            payload,
            Value::Null,
        )
    }

    fn upcast(mut event: SerializedEvent) -> SerializedEvent {
        for upcaster in upcasters() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        event
    }

    #[test]
    fn a_schema_1_configuration_change_reads_as_schema_3_with_every_parameter_changed_and_restarting() {
        let old = stored(
            "ConfigurationChanged",
            "1",
            json!({"config": {"max_connections": 200, "wal_level": "logical"}}),
        );
        let event = upcast(old);
        assert_eq!(event.event_version, "3");
        let decoded: InstanceEvent =
            serde_json::from_value(json!({"type": event.event_type, "data": event.payload})).unwrap();
        let InstanceEvent::ConfigurationChanged { config, changed, restart } = &decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(config.len(), 2);
        assert_eq!(changed, &["max_connections", "wal_level"]);
        assert_eq!(restart, changed);
        assert_eq!(decoded.schema(), event.event_version, "upcast to the schema this build writes");
    }

    #[test]
    fn a_schema_2_configuration_change_reads_with_every_changed_parameter_restarting() {
        let old = stored(
            "ConfigurationChanged",
            "2",
            json!({"config": {"work_mem_kib": 64}, "changed": ["work_mem_kib"]}),
        );
        let event = upcast(old);
        assert_eq!(event.event_version, "3");
        assert_eq!(event.payload["restart"], json!(["work_mem_kib"]));
    }

    #[test]
    fn current_schemas_and_other_types_pass_unchanged() {
        let current =
            stored("ConfigurationChanged", "3", json!({"config": {}, "changed": ["a"], "restart": []}));
        assert_eq!(upcast(current.clone()), current);
        let other = stored("VersionUpgraded", "1", json!({"from": "16", "to": "17"}));
        assert_eq!(upcast(other.clone()), other);
    }
}

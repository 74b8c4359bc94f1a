//! A child object as the watch caches keep it: its metadata typed (what the index, the triggers and the
//! cleanup read as fields), everything else as compact JSON text, read back into a `serde_json` tree only
//! when a reconcile asks for the object.
//!
//! A `serde_json::Value` tree costs several times its text: every map entry is a node with an owned key,
//! every value 32 bytes plus its own allocation. The objects' text is what the agent compares against
//! what it renders (`render::is_applied` reads every field it applies, and a drift report names the field
//! found), so nothing is dropped from it; only its form changes. kube-runtime 5.0.0 offers the hook for
//! this, `watcher::Event::modify` ("This allows for memory optimizations in watch streams. If you are
//! chaining a watch stream into a reflector as an in memory state store, you can control the space used
//! by each object by dropping fields", `kube-runtime/src/watcher.rs`); a change of type needs the same done
//! as a map of the events before the reflector, which stores whatever `Lookup` type it is given
//! (`kube-runtime/src/reflector/mod.rs`, `reflector`).
//!
//! The kind is the cache's dynamic type, so a cache key holds a one-byte kind instead of the five strings
//! of an `ApiResource`.

use std::borrow::Cow;

use k8s_openapi::{
    Resource as _,
    api::{
        apps::v1::StatefulSet,
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, Service},
        networking::v1::NetworkPolicy,
    },
};
use kube::{
    api::{DynamicObject, ObjectMeta},
    core::NamespaceResourceScope,
    runtime::watcher,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::{Map, Value, value::RawValue};

use crate::render::ChildKind;

/// Group, version and plural of each child kind (the CloudNativePG ones as `super::api_resource` names
/// them).
pub(crate) fn coordinates(kind: ChildKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ChildKind::StatefulSet => (StatefulSet::GROUP, StatefulSet::VERSION, StatefulSet::URL_PATH_SEGMENT),
        ChildKind::Service => (Service::GROUP, Service::VERSION, Service::URL_PATH_SEGMENT),
        ChildKind::ConfigMap => (ConfigMap::GROUP, ConfigMap::VERSION, ConfigMap::URL_PATH_SEGMENT),
        ChildKind::Secret => (Secret::GROUP, Secret::VERSION, Secret::URL_PATH_SEGMENT),
        ChildKind::NetworkPolicy => {
            (NetworkPolicy::GROUP, NetworkPolicy::VERSION, NetworkPolicy::URL_PATH_SEGMENT)
        }
        ChildKind::Job => (Job::GROUP, Job::VERSION, Job::URL_PATH_SEGMENT),
        ChildKind::PostgresCluster => ("postgresql.cnpg.io", "v1", "clusters"),
        ChildKind::ObjectStore => ("barmancloud.cnpg.io", "v1", "objectstores"),
    }
}

/// A cached child object.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// its metadata, without managed fields (the agent never reads them)
    pub(crate) metadata: ObjectMeta,
    /// the rest of the object as the API server sent it (`apiVersion`, `kind` when sent, `spec`,
    /// `status`, `data`, …), a JSON object
    rest: Box<RawValue>,
}

impl Cached {
    /// The object as a `serde_json` tree, as `serde_json::to_value` gives a `DynamicObject`.
    pub(crate) fn value(&self) -> Value {
        let mut object = match serde_json::from_str(self.rest.get()) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        object.insert("metadata".into(), serde_json::to_value(&self.metadata).unwrap_or_default());
        Value::Object(object)
    }
}

impl From<DynamicObject> for Cached {
    fn from(object: DynamicObject) -> Self {
        let DynamicObject { types, mut metadata, data } = object;
        metadata.managed_fields = None;
        let mut rest = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Some(types) = types {
            rest.insert("apiVersion".into(), Value::String(types.api_version));
            rest.insert("kind".into(), Value::String(types.kind));
        }
        let rest = serde_json::value::to_raw_value(&rest).expect("a JSON map serializes");
        Self { metadata, rest }
    }
}

/// The event with its object in the cached form.
pub(crate) fn event(event: watcher::Event<DynamicObject>) -> watcher::Event<Cached> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(object.into()),
        watcher::Event::Delete(object) => watcher::Event::Delete(object.into()),
        watcher::Event::InitApply(object) => watcher::Event::InitApply(object.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

impl Serialize for Cached {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

/// From a whole object (kube-runtime's triggers ask for `DeserializeOwned`; the agent's caches are filled
/// from the watch's `DynamicObject`s instead).
impl<'de> Deserialize<'de> for Cached {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DynamicObject::deserialize(deserializer).map(Self::from).map_err(D::Error::custom)
    }
}

impl kube::Resource for Cached {
    type DynamicType = ChildKind;
    type Scope = NamespaceResourceScope;

    fn kind(kind: &ChildKind) -> Cow<'_, str> {
        kind.kind().into()
    }

    fn group(kind: &ChildKind) -> Cow<'_, str> {
        coordinates(*kind).0.into()
    }

    fn version(kind: &ChildKind) -> Cow<'_, str> {
        coordinates(*kind).1.into()
    }

    fn plural(kind: &ChildKind) -> Cow<'_, str> {
        coordinates(*kind).2.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_cached_form_reads_back_as_the_object_without_its_managed_fields() {
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": "db", "namespace": "cp-a", "uid": "u1", "resourceVersion": "7",
                "labels": {"cp.example.com/instance-id": "i1"},
                "annotations": {"cp.example.com/config-hash": "abc"},
                "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "db", "image": "x:1"}]}}},
            "status": {"readyReplicas": 2, "observedGeneration": 4}
        });
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let expected = {
            let mut stripped = dynamic.clone();
            stripped.metadata.managed_fields = None;
            serde_json::to_value(&stripped).unwrap()
        };
        let cached = Cached::from(dynamic);
        assert_eq!(cached.value(), expected);
        assert_eq!(serde_json::to_value(&cached).unwrap(), expected);
        assert!(expected["metadata"].get("managedFields").is_none());
        assert_eq!(expected["spec"], object["spec"]);
        assert_eq!(expected["apiVersion"], "apps/v1");
        // What the triggers' deserialization gives is the same.
        let read: Cached = serde_json::from_value(object).unwrap();
        assert_eq!(read.value(), expected);
    }

    #[test]
    fn the_coordinates_are_those_of_the_api_resources() {
        for kind in crate::controller::CHILD_KINDS {
            let resource = crate::controller::api_resource(kind);
            assert_eq!(
                coordinates(kind),
                (resource.group.as_str(), resource.version.as_str(), resource.plural.as_str()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn an_object_listed_without_its_types_reads_back_without_them() {
        let object = json!({"metadata": {"name": "s", "namespace": "cp-a"}, "data": {"k": "dg=="}});
        let cached = Cached::from(serde_json::from_value::<DynamicObject>(object.clone()).unwrap());
        assert_eq!(cached.value(), object);
    }
}

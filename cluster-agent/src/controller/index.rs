//! Which cached objects belong to which instance: an index beside each watch cache, so a reconcile finds
//! an instance's objects without reading every object of the cluster. kube-rs's reflector `Store` has no
//! index (`Store::state` copies the whole cache), and a reconcile asks for each kind: at a thousand
//! instances per cluster that scan was most of the agent's CPU, and it grew with every instance.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use kube::{Resource, ResourceExt as _, runtime::watcher::Event};

use crate::render::INSTANCE_LABEL;

/// Namespace and name of an object.
type Key = (String, String);

/// Namespace and name of the objects labelled with each instance id. An instance has a handful of objects
/// of a kind (most have one), so they are a list: a hash set's smallest table is four slots and their
/// control bytes, for every instance and kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceIndex(Arc<Mutex<HashMap<String, Vec<Key>>>>);

impl InstanceIndex {
    /// Follows a watch event, after the reflector has applied it to the cache (so an object the index
    /// names is in the cache, unless it has been deleted since).
    pub(crate) fn observe<K: Resource>(&self, event: &Event<K>) {
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                if let Some((id, key)) = entry(object) {
                    let mut index = self.lock();
                    let keys = index.entry(id).or_default();
                    if !keys.contains(&key) {
                        keys.push(key);
                        keys.shrink_to_fit();
                    }
                }
            }
            Event::Delete(object) => {
                if let Some((id, key)) = entry(object) {
                    let mut index = self.lock();
                    if let Some(keys) = index.get_mut(&id) {
                        keys.retain(|k| *k != key);
                        if keys.is_empty() {
                            index.remove(&id);
                        }
                    }
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }

    /// Namespace and name of each object that carried `instance_id`'s label when last seen. A candidate
    /// only: the caller reads it from the cache and checks the label, because an object relabelled, or
    /// deleted while the watch was down (its re-list sends no delete), keeps its entry here.
    pub(crate) fn candidates(&self, instance_id: &str) -> Vec<Key> {
        self.lock().get(instance_id).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Key>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry<K: Resource>(object: &K) -> Option<(String, Key)> {
    let id = object.labels().get(INSTANCE_LABEL)?.clone();
    Some((id, (object.namespace().unwrap_or_default(), object.name_any())))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(namespace: &str, name: &str, instance: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(INSTANCE_LABEL.to_owned(), instance.to_owned())])),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn an_instance_s_objects_are_found_until_deleted_and_others_never() {
        let index = InstanceIndex::default();
        index.observe(&Event::InitApply(config_map("cp-a", "db-1", "i1")));
        index.observe(&Event::Apply(config_map("cp-a", "db-1-extra", "i1")));
        index.observe(&Event::Apply(config_map("cp-a", "db-2", "i2")));
        let mut found = index.candidates("i1");
        found.sort();
        assert_eq!(
            found,
            [("cp-a".to_owned(), "db-1".to_owned()), ("cp-a".to_owned(), "db-1-extra".to_owned())]
        );

        index.observe(&Event::Delete(config_map("cp-a", "db-1", "i1")));
        assert_eq!(index.candidates("i1"), [("cp-a".to_owned(), "db-1-extra".to_owned())]);
        index.observe(&Event::Delete(config_map("cp-a", "db-1-extra", "i1")));
        assert!(index.candidates("i1").is_empty());
        assert_eq!(index.candidates("i2"), [("cp-a".to_owned(), "db-2".to_owned())]);
        assert!(index.candidates("unknown").is_empty());
    }

    #[test]
    fn an_object_without_the_instance_label_is_not_indexed() {
        let index = InstanceIndex::default();
        let mut unlabelled = config_map("cp-a", "other", "i1");
        unlabelled.metadata.labels = None;
        index.observe(&Event::Apply(unlabelled));
        assert!(index.candidates("i1").is_empty());
    }
}

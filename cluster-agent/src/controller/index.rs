//! Which cached objects belong to which instance: an index beside each watch cache, so a reconcile finds
//! an instance's objects without reading every object of the cluster. kube-rs's reflector `Store` has no
//! index (`Store::state` copies the whole cache), and a reconcile asks for each kind: at a thousand
//! instances per cluster that scan was most of the agent's CPU, and it grew with every instance.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use kube::{Resource, ResourceExt as _, runtime::watcher::Event};

use crate::render::INSTANCE_LABEL;

/// Namespace and name of an object.
type Key = (String, String);

/// Namespace and name of the objects labelled with each instance id.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceIndex(Arc<Mutex<HashMap<String, HashSet<Key>>>>);

impl InstanceIndex {
    /// Follows a watch event, after the reflector has applied it to the cache (so an object the index
    /// names is in the cache, unless it has been deleted since).
    pub(crate) fn observe<K: Resource>(&self, event: &Event<K>) {
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                if let Some((id, key)) = entry(object) {
                    self.lock().entry(id).or_default().insert(key);
                }
            }
            Event::Delete(object) => {
                if let Some((id, key)) = entry(object) {
                    let mut index = self.lock();
                    if let Some(keys) = index.get_mut(&id) {
                        keys.remove(&key);
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
        self.lock().get(instance_id).map(|keys| keys.iter().cloned().collect()).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<Key>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry<K: Resource>(object: &K) -> Option<(String, Key)> {
    let id = object.labels().get(INSTANCE_LABEL)?.clone();
    Some((id, (object.namespace().unwrap_or_default(), object.name_any())))
}

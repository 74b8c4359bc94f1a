//! Objects, resource versions, watch history and the writes that change them. The types served live in
//! `types`, the JSON rules of a write in `semantics`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

mod semantics;
mod types;

pub use semantics::{merge, quantity_bytes, selector_matches};
use semantics::{meta, name_of, prune, spec_part, validate_update, without_volatile};
pub use types::{Change, ResourceType, StatusError, builtin_types};

/// How many past changes a watch can resume from; older resourceVersions get 410 Gone.
pub const HISTORY: usize = 20_000;

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    /// last configuration applied by each field manager (server-side apply)
    applied: HashMap<String, Value>,
}

/// An object at rest: its JSON text. A `serde_json::Value` takes several times the memory of its text,
/// and at a hundred clusters of a thousand instances the simulator held more than the machine has;
/// writes parse it again (some microseconds), which the control plane never notices.
#[derive(Debug)]
struct Compact {
    object: Box<str>,
    applied: Box<str>,
}

impl Compact {
    fn of(object: &Value, applied: &HashMap<String, Value>) -> Self {
        Self { object: object.to_string().into(), applied: json!(applied).to_string().into() }
    }

    fn object(&self) -> Value {
        serde_json::from_str(&self.object).unwrap_or(Value::Null)
    }

    fn stored(&self) -> Stored {
        Stored { object: self.object(), applied: serde_json::from_str(&self.applied).unwrap_or_default() }
    }
}

type Key = (String, String, String);

/// All objects.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Compact>,
    history: VecDeque<Change>,
    /// how many changes `history` keeps
    history_limit: usize,
    changes: broadcast::Sender<Change>,
}

impl Store {
    /// An empty store with the built-in types, keeping the last [`HISTORY`] changes for watches to resume
    /// from.
    pub fn new(changes: broadcast::Sender<Change>) -> Self {
        Self::with_history(changes, HISTORY)
    }

    /// An empty store that keeps the last `history` changes for watches to resume from.
    pub fn with_history(changes: broadcast::Sender<Change>, history: usize) -> Self {
        Self {
            rv: 1,
            types: builtin_types(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history.max(1),
            changes,
        }
    }

    /// Current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Served types.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `group/version/plural`.
    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    fn record(&mut self, kind: &'static str, ty: &ResourceType, namespace: &str, object: Value) {
        let change = Change {
            rv: self.rv,
            kind,
            resource: ty.key(),
            namespace: namespace.to_owned(),
            labels: std::sync::Arc::new(meta(&object)["labels"].as_object().cloned().unwrap_or_default()),
            object: object.to_string().into(),
        };
        if self.history.len() >= self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        let _ = self.changes.send(change);
    }

    /// Oldest resourceVersion a watch may resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.history.front().map_or(self.rv, |c| c.rv.saturating_sub(1))
    }

    /// Changes after `rv` of `resource` in `namespace` (all namespaces when `None`).
    pub fn changes_since(&self, rv: u64, resource: &str, namespace: Option<&str>) -> Vec<Change> {
        self.history
            .iter()
            .filter(|c| c.rv > rv && c.resource == resource && namespace.is_none_or(|ns| c.namespace == ns))
            .cloned()
            .collect()
    }

    /// One object.
    pub fn get(&self, ty: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.objects.get(&(ty.key(), namespace.to_owned(), name.to_owned())).map(Compact::object)
    }

    /// The stored objects of a type, optionally in one namespace, in key order: a range of the map, not a
    /// scan of every object (a cluster holds hundreds of thousands at scale).
    fn of_type<'a>(
        &'a self,
        ty: &ResourceType,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Compact)> + 'a {
        let key = ty.key();
        let start = (key.clone(), namespace.unwrap_or_default().to_owned(), String::new());
        self.objects
            .range(start..)
            .take_while(move |((k, ns, _), _)| *k == key && namespace.is_none_or(|n| n == ns))
            .map(|((_, _, name), stored)| (name.as_str(), stored))
    }

    /// Names of the objects of a type in a namespace.
    pub fn names(&self, ty: &ResourceType, namespace: &str) -> Vec<String> {
        self.of_type(ty, Some(namespace)).map(|(name, _)| name.to_owned()).collect()
    }

    /// Objects of a type, optionally in one namespace, matching a label selector.
    pub fn list(&self, ty: &ResourceType, namespace: Option<&str>, selector: Option<&str>) -> Vec<Value> {
        self.of_type(ty, namespace)
            .map(|(_, s)| s.object())
            .filter(|o| {
                selector.is_none_or(|sel| {
                    selector_matches(sel, meta(o)["labels"].as_object().unwrap_or(&Map::new()))
                })
            })
            .collect()
    }

    fn stamp(&mut self, ty: &ResourceType, namespace: &str, object: &mut Value, previous: Option<&Value>) {
        self.rv += 1;
        if ty.key() == "secrets" {
            semantics::fold_string_data(object);
        }
        let changed = previous.is_some_and(|p| spec_part(p) != spec_part(object));
        object["apiVersion"] = json!(ty.api_version());
        object["kind"] = json!(ty.kind);
        let meta = object["metadata"].as_object_mut().expect("metadata is an object");
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if ty.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        match previous {
            Some(previous) => {
                for key in ["uid", "creationTimestamp"] {
                    if let Some(v) = previous["metadata"].get(key) {
                        meta.insert(key.into(), v.clone());
                    }
                }
                let generation = previous["metadata"]["generation"].as_i64().unwrap_or(1);
                meta.insert("generation".into(), json!(if changed { generation + 1 } else { generation }));
            }
            None => {
                meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                meta.insert(
                    "creationTimestamp".into(),
                    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                meta.insert("generation".into(), json!(1));
            }
        }
    }

    fn existing(&self, ty: &ResourceType, namespace: &str, name: &str) -> Result<(Key, Stored), StatusError> {
        let key = (ty.key(), namespace.to_owned(), name.to_owned());
        let stored = self.objects.get(&key).map(Compact::stored).ok_or_else(|| {
            StatusError::new(404, "NotFound", format!("{} \"{name}\" not found", ty.plural))
        })?;
        Ok((key, stored))
    }

    /// Writes through the main resource never change `status`; writes through `/status` change only it.
    fn confine(stored: &Value, mut changed: Value, subresource_status: bool) -> Value {
        if subresource_status {
            let status = changed["status"].take();
            changed = stored.clone();
            changed["status"] = status;
        } else {
            changed["status"] = stored["status"].clone();
        }
        changed
    }

    fn check_namespace(&self, ty: &ResourceType, namespace: &str) -> Result<(), StatusError> {
        if ty.namespaced
            && !self.objects.contains_key(&("namespaces".into(), String::new(), namespace.to_owned()))
        {
            return Err(StatusError::new(404, "NotFound", format!("namespaces \"{namespace}\" not found")));
        }
        Ok(())
    }

    /// Creates an object.
    pub fn create(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, StatusError> {
        let name =
            name_of(&object).ok_or_else(|| StatusError::new(422, "Invalid", "metadata.name is required"))?;
        self.check_namespace(ty, namespace)?;
        let key = (ty.key(), namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(StatusError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", ty.plural),
            ));
        }
        self.stamp(ty, namespace, &mut object, None);
        self.after_write(ty, &key, object.clone(), HashMap::new(), "ADDED");
        Ok(object)
    }

    fn after_write(
        &mut self,
        ty: &ResourceType,
        key: &Key,
        object: Value,
        applied: HashMap<String, Value>,
        kind: &'static str,
    ) {
        if ty.plural == "customresourcedefinitions" {
            self.register_crd(&object);
        }
        self.objects.insert(key.clone(), Compact::of(&object, &applied));
        self.record(kind, ty, &key.1, object);
    }

    fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for version in spec["versions"].as_array().into_iter().flatten() {
            let version = version["name"].as_str().unwrap_or_default();
            let ty = ResourceType::new(group, version, plural, kind, namespaced);
            if !self.types.contains(&ty) && !group.is_empty() {
                self.types.push(ty);
            }
        }
    }

    /// Server-side apply by `manager`: creates the object, or merges the applied configuration into it
    /// and removes the fields this manager applied before but no longer does. A no-op apply changes
    /// nothing (no new resourceVersion, no watch event), as on a real apiserver.
    pub fn apply(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        manager: &str,
        applied: Value,
        subresource_status: bool,
    ) -> Result<Value, StatusError> {
        if !applied.is_object() {
            return Err(StatusError::new(400, "BadRequest", "apply body must be an object"));
        }
        self.check_namespace(ty, namespace)?;
        let key = (ty.key(), namespace.to_owned(), name.to_owned());
        let applied = if subresource_status {
            json!({"status": applied["status"].clone()})
        } else {
            let mut a = applied;
            if let Some(map) = a.as_object_mut() {
                map.remove("status");
            }
            a
        };
        let Some(stored) = self.objects.get(&key).map(Compact::stored) else {
            if subresource_status {
                return Err(StatusError::new(404, "NotFound", format!("{} \"{name}\" not found", ty.plural)));
            }
            let mut object = applied.clone();
            object["metadata"]["name"] = json!(name);
            self.stamp(ty, namespace, &mut object, None);
            let managers = HashMap::from([(manager.to_owned(), applied)]);
            self.after_write(ty, &key, object.clone(), managers, "ADDED");
            return Ok(object);
        };
        let mut object = stored.object.clone();
        let mut managers = stored.applied.clone();
        let manager_key = if subresource_status { format!("{manager}/status") } else { manager.to_owned() };
        if let Some(previous) = managers.get(&manager_key) {
            prune(&mut object, previous, &applied);
        }
        merge(&mut object, &applied);
        managers.insert(manager_key, applied);
        self.write_if_changed(ty, &key, stored, object, managers)
    }

    fn write_if_changed(
        &mut self,
        ty: &ResourceType,
        key: &Key,
        stored: Stored,
        mut object: Value,
        managers: HashMap<String, Value>,
    ) -> Result<Value, StatusError> {
        if without_volatile(&object) == without_volatile(&stored.object) {
            self.objects.insert(key.clone(), Compact::of(&stored.object, &managers));
            return Ok(stored.object);
        }
        validate_update(ty, &stored.object, &object)?;
        let deleting = !object["metadata"]["deletionTimestamp"].is_null();
        let finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        self.stamp(ty, &key.1, &mut object, Some(&stored.object));
        if deleting && !finalizers {
            self.objects.remove(key);
            self.record("DELETED", ty, &key.1, object.clone());
            self.collect_garbage(&object);
            return Ok(object);
        }
        self.after_write(ty, key, object.clone(), managers, "MODIFIED");
        Ok(object)
    }

    /// JSON merge patch (also used for strategic merge patches, which agree on what we serve).
    pub fn merge_patch(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Value,
        subresource_status: bool,
    ) -> Result<Value, StatusError> {
        let (key, stored) = self.existing(ty, namespace, name)?;
        let mut object = stored.object.clone();
        merge(&mut object, patch);
        let object = Self::confine(&stored.object, object, subresource_status);
        let managers = stored.applied.clone();
        self.write_if_changed(ty, &key, stored, object, managers)
    }

    /// JSON patch (RFC 6902), including `test` operations (the finalizer helpers use them as guards).
    pub fn json_patch(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        patch: Value,
        subresource_status: bool,
    ) -> Result<Value, StatusError> {
        let (key, stored) = self.existing(ty, namespace, name)?;
        // As on the apiserver, testing a missing path against null succeeds (the json-patch crate says the
        // path is invalid); the finalizer helpers rely on that for their first finalizer.
        let mut patch = patch;
        if let Some(ops) = patch.as_array_mut() {
            ops.retain(|op| {
                !(op["op"] == "test"
                    && op["value"].is_null()
                    && op["path"].as_str().is_some_and(|p| stored.object.pointer(p).is_none()))
            });
        }
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| StatusError::new(400, "BadRequest", e.to_string()))?;
        let mut object = stored.object.clone();
        json_patch::patch(&mut object, &patch)
            .map_err(|e| StatusError::new(422, "Invalid", e.to_string()))?;
        let object = Self::confine(&stored.object, object, subresource_status);
        let managers = stored.applied.clone();
        self.write_if_changed(ty, &key, stored, object, managers)
    }

    /// Replaces an object (PUT).
    pub fn replace(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
        subresource_status: bool,
    ) -> Result<Value, StatusError> {
        let (key, stored) = self.existing(ty, namespace, name)?;
        // A PUT naming a resourceVersion is conditional on it (k8s.io/apiserver v0.36.1
        // pkg/registry/generic/registry/store.go `Update`: the version is a precondition of
        // `GuaranteedUpdate`; a stale one is 409 Conflict).
        if let Some(version) = object["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty())
            && Some(version) != stored.object["metadata"]["resourceVersion"].as_str()
        {
            return Err(StatusError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    ty.key()
                ),
            ));
        }
        let mut new = Self::confine(&stored.object, object, subresource_status);
        new["metadata"]["name"] = json!(name);
        let managers = stored.applied.clone();
        self.write_if_changed(ty, &key, stored, new, managers)
    }

    /// Deletes an object; with finalizers it is only marked (deletionTimestamp) until they are removed.
    pub fn delete(&mut self, ty: &ResourceType, namespace: &str, name: &str) -> Result<Value, StatusError> {
        let (key, stored) = self.existing(ty, namespace, name)?;
        let finalizers = stored.object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if finalizers {
            if stored.object["metadata"]["deletionTimestamp"].is_null() {
                let mut object = stored.object.clone();
                object["metadata"]["deletionTimestamp"] =
                    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
                let managers = stored.applied.clone();
                return self.write_if_changed(ty, &key, stored, object, managers);
            }
            return Ok(stored.object);
        }
        self.objects.remove(&key);
        self.rv += 1;
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record("DELETED", ty, namespace, object.clone());
        self.collect_garbage(&object);
        if ty.plural == "namespaces" {
            let doomed: Vec<Key> = self.objects.keys().filter(|(_, ns, _)| ns == name).cloned().collect();
            for (resource, ns, n) in doomed {
                if let Some(t) = self.types.iter().find(|t| t.key() == resource).cloned() {
                    let _ = self.delete(&t, &ns, &n);
                }
            }
        }
        Ok(object)
    }

    /// Background garbage collection: deletes objects owned by `owner`.
    fn collect_garbage(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else { return };
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, s)| {
                // The text first: parsing every object of the cluster per delete would be quadratic.
                s.object.contains(uid)
                    && s.object()["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (resource, ns, name) in owned {
            if let Some(t) = self.types.iter().find(|t| t.key() == resource).cloned() {
                let _ = self.delete(&t, &ns, &name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect()
    }

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let l = labels(&[("app", "db"), ("tier", "data")]);
        assert!(selector_matches("app=db", &l));
        assert!(selector_matches("app==db,tier", &l));
        assert!(selector_matches("app in (db, web),!missing", &l));
        assert!(!selector_matches("app!=db", &l));
        assert!(!selector_matches("tier notin (data)", &l));
        assert!(selector_matches("", &l));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying_and_a_noop_changes_nothing() {
        let (tx, _) = broadcast::channel(16);
        let mut store = Store::new(tx);
        let ns = store.resource_type("", "v1", "namespaces").unwrap();
        store.apply(&ns, "", "a", "m", json!({"metadata": {"name": "a"}}), false).unwrap();
        let cm = store.resource_type("", "v1", "configmaps").unwrap();
        let first = store
            .apply(
                &cm,
                "a",
                "c",
                "m",
                json!({"metadata": {"name": "c"}, "data": {"x": "1", "y": "2"}}),
                false,
            )
            .unwrap();
        let again = store
            .apply(
                &cm,
                "a",
                "c",
                "m",
                json!({"metadata": {"name": "c"}, "data": {"x": "1", "y": "2"}}),
                false,
            )
            .unwrap();
        assert_eq!(first["metadata"]["resourceVersion"], again["metadata"]["resourceVersion"]);
        let second = store
            .apply(&cm, "a", "c", "m", json!({"metadata": {"name": "c"}, "data": {"x": "3"}}), false)
            .unwrap();
        assert_eq!(second["data"], json!({"x": "3"}));
    }

    #[test]
    fn claim_templates_cannot_change_and_claims_cannot_shrink() {
        let (tx, _) = broadcast::channel(16);
        let mut store = Store::new(tx);
        let ns = store.resource_type("", "v1", "namespaces").unwrap();
        store.apply(&ns, "", "a", "m", json!({"metadata": {"name": "a"}}), false).unwrap();
        let sts = store.resource_type("apps", "v1", "statefulsets").unwrap();
        let set = |replicas: u32, size: &str| {
            json!({"metadata": {"name": "s"}, "spec": {"replicas": replicas, "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": size}}}}]}})
        };
        store.apply(&sts, "a", "s", "m", set(1, "10Gi"), false).unwrap();
        store.apply(&sts, "a", "s", "m", set(3, "10Gi"), false).expect("replicas may change");
        let refused = store.apply(&sts, "a", "s", "m", set(3, "20Gi"), false).unwrap_err();
        assert_eq!((refused.code, refused.reason), (422, "Invalid"));
        assert!(refused.message.contains("Forbidden: updates to statefulset spec"), "{}", refused.message);

        let pvc = store.resource_type("", "v1", "persistentvolumeclaims").unwrap();
        let claim = |size: &str| json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": size}}}});
        store.create(&pvc, "a", claim("10Gi")).unwrap();
        store.merge_patch(&pvc, "a", "c", &claim("20Gi"), false).expect("claims may grow");
        let refused = store.merge_patch(&pvc, "a", "c", &claim("15Gi"), false).unwrap_err();
        assert_eq!(refused.code, 422);
        assert_eq!(quantity_bytes("2Gi"), 2 << 30);
        assert_eq!(quantity_bytes("5G"), 5_000_000_000);
    }
}

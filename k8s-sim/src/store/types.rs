//! The resource types the simulator serves, the changes watches see, and the API server's error bodies.

use serde_json::{Value, json};

/// A kind of resource the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group ("" for the core group)
    pub group: String,
    /// version
    pub version: String,
    /// plural resource name
    pub plural: String,
    /// kind
    pub kind: String,
    /// namespaced or cluster-scoped
    pub namespaced: bool,
    /// whether it has a status subresource
    pub status: bool,
}

impl ResourceType {
    pub(crate) fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        let status = !matches!(
            plural,
            "configmaps"
                | "secrets"
                | "customresourcedefinitions"
                | "networkpolicies"
                | "serviceaccounts"
                | "roles"
                | "rolebindings"
        );
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status,
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Key used in request counts and the object map: `plural.group`.
    pub fn key(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// Built-in resource types.
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "namespaces", "Namespace", false),
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true),
        ResourceType::new("", "v1", "secrets", "Secret", true),
        ResourceType::new("", "v1", "services", "Service", true),
        ResourceType::new("", "v1", "pods", "Pod", true),
        ResourceType::new("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true),
        ResourceType::new("apps", "v1", "statefulsets", "StatefulSet", true),
        ResourceType::new("batch", "v1", "jobs", "Job", true),
        ResourceType::new("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true),
        ResourceType::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        ),
        ResourceType::new("postgresql.cnpg.io", "v1", "clusters", "Cluster", true),
        ResourceType::new("postgresql.cnpg.io", "v1", "backups", "Backup", true),
        ResourceType::new("barmancloud.cnpg.io", "v1", "objectstores", "ObjectStore", true),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        // The account, Role and binding of the agent's users Jobs (InfluxDB tokens).
        ResourceType::new("", "v1", "serviceaccounts", "ServiceAccount", true),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true),
    ]
}

/// A change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// resourceVersion of the change
    pub rv: u64,
    /// ADDED, MODIFIED or DELETED
    pub kind: &'static str,
    /// `ResourceType::key` of the object
    pub resource: String,
    /// namespace ("" when cluster-scoped)
    pub namespace: String,
    /// the object after the change (before, for DELETED) as JSON text, shared: every watcher of the
    /// simulator receives every change (a copy each cost more CPU than the rest of a write), writes it
    /// as it is, and the buffer of changes on their way holds thousands per cluster (as trees they took
    /// gigabytes at a hundred clusters)
    pub object: std::sync::Arc<str>,
    /// its labels, for watchers' selectors
    pub labels: std::sync::Arc<serde_json::Map<String, Value>>,
}

impl Change {
    /// The object, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.object).unwrap_or(Value::Null)
    }
}

/// Why a write failed, as a Kubernetes Status.
#[derive(Debug, Clone)]
pub struct StatusError {
    /// HTTP code
    pub code: u16,
    /// reason, e.g. NotFound
    pub reason: &'static str,
    /// message
    pub message: String,
}

impl StatusError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }

    /// The Status object.
    pub fn body(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

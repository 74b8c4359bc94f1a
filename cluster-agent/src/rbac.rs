//! The Kubernetes permissions the agent needs, kept beside the code that uses them.
//!
//! `deploy/rbac/cluster-agent.yaml` is generated from here (`cargo run -p cluster-agent --bin rbacgen`,
//! drift-checked by a test), and the converge tests check every request the agent makes of the simulated
//! API server against [`rules`]: an agent change that needs a new verb fails a test instead of failing on
//! a real cluster with 403.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kube::api::ObjectMeta;

/// Name of the service account, cluster role and binding.
pub const NAME: &str = "cp-cluster-agent";
/// Namespace the agent runs in.
pub const NAMESPACE: &str = "cp-system";

/// What server-side apply of an owned object, its watch cache and its cleanup need. Apply may create,
/// so `create` is granted with `patch`.
const APPLY_AND_WATCH: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Every permission the agent uses, cluster-wide: instances live in one namespace per project, created on
/// demand, so the agent cannot be confined to namespaces known in advance.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        // One namespace per project, applied on first use; listed (its own, by label) at start so a restart
        // re-applies none.
        rule("", &["namespaces"], &["get", "list", "create", "patch"]),
        // The mirror applies instances and deletes them on deprovision; the controller watches them and
        // patches its finalizer in and out.
        rule("cp.example.com", &["managedinstances"], APPLY_AND_WATCH),
        rule("cp.example.com", &["managedinstances/status"], &["get", "patch"]),
        rule("apps", &["statefulsets"], APPLY_AND_WATCH),
        // Secrets: the credentials are generated in the cluster, once, and never leave it.
        rule("", &["services", "configmaps", "secrets"], APPLY_AND_WATCH),
        // Claims are made by the StatefulSet controller; the agent grows them and removes them after the set.
        rule("", &["persistentvolumeclaims"], &["get", "list", "watch", "patch", "delete"]),
        rule("postgresql.cnpg.io", &["clusters"], APPLY_AND_WATCH),
        // PostgreSQL backups: each instance's ObjectStore (Barman Cloud plugin) and one CloudNativePG
        // Backup per backup.
        rule("barmancloud.cnpg.io", &["objectstores"], APPLY_AND_WATCH),
        rule("postgresql.cnpg.io", &["backups"], APPLY_AND_WATCH),
        // Network access: each instance's NetworkPolicy admits its ACL.
        rule("networking.k8s.io", &["networkpolicies"], APPLY_AND_WATCH),
        // A credentials rotation runs the service's own password change as a Job.
        rule("batch", &["jobs"], APPLY_AND_WATCH),
        // Pods are only read: the kubelet reports there why a container does not run.
        rule("", &["pods"], &["get", "list", "watch"]),
        // `--install-crd` applies the ManagedInstance CRD.
        rule("apiextensions.k8s.io", &["customresourcedefinitions"], &["get", "create", "patch"]),
    ]
}

/// Whether [`rules`] allow `verb` on `resource` (plural, with `/subresource` if any) of API `group`.
pub fn permits(verb: &str, group: &str, resource: &str) -> bool {
    rules().iter().any(|rule| {
        let has =
            |list: &Option<Vec<String>>, item: &str| list.iter().flatten().any(|x| x == item || x == "*");
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb || v == "*")
    })
}

/// The manifests of `deploy/rbac/cluster-agent.yaml`: service account, cluster role, and their binding.
pub fn manifests() -> (ServiceAccount, ClusterRole, ClusterRoleBinding) {
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(NAME.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some([("app.kubernetes.io/name".to_owned(), "cluster-agent".to_owned())].into()),
        ..ObjectMeta::default()
    };
    let account = ServiceAccount { metadata: meta(Some(NAMESPACE)), ..ServiceAccount::default() };
    let role = ClusterRole { metadata: meta(None), rules: Some(rules()), ..ClusterRole::default() };
    let binding = ClusterRoleBinding {
        metadata: meta(None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: NAME.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: NAME.to_owned(),
            namespace: Some(NAMESPACE.to_owned()),
            ..Subject::default()
        }]),
    };
    (account, role, binding)
}

/// The manifests as one multi-document YAML file.
pub fn manifests_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let (account, role, binding) = manifests();
    Ok([
        serde_saphyr::to_string(&account)?,
        serde_saphyr::to_string(&role)?,
        serde_saphyr::to_string(&binding)?,
    ]
    .join("---\n"))
}

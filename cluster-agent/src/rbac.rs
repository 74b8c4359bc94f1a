//! The Kubernetes permissions the agent needs, kept beside the code that uses them.
//!
//! `deploy/rbac/cluster-agent.yaml` is generated from here (`cargo run -p cluster-agent --bin rbacgen`,
//! drift-checked by a test). Both directions are tested: the scenarios check every request the agent
//! makes against [`rules`] (and the real API server enforces them), so an agent change that needs a new
//! verb fails a test instead of failing on a real cluster with 403; `tests/least_privilege.rs` runs the
//! whole repertoire on a real API server and fails on a granted verb no request used.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kube::api::ObjectMeta;

/// Name of the service account, cluster role and binding.
pub const NAME: &str = "cp-cluster-agent";
/// Namespace the agent runs in.
pub const NAMESPACE: &str = "cp-system";

/// An object the agent renders: watched (`list`, `watch`: one cache per kind), server-side applied
/// (`patch`, and `create` when the apply makes the object: the API server authorizes such an apply as
/// `create` too, k8s.io/apiserver v0.36.1 `pkg/endpoints/handlers/patch.go`, `createAuthorizerAttributes`
/// checked in `createValidation`), and deleted when pruned or deprovisioned. No `get`: reads come from
/// the watch cache.
const RENDERED: &[&str] = &["list", "watch", "create", "patch", "delete"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Every permission the agent uses, cluster-wide: instances live in one namespace per project, created on
/// demand, so the agent cannot be confined to namespaces known in advance (a Role per namespace would need
/// the agent to grant itself Roles, which takes `bind`/`escalate` or every permission it grants). Each
/// verb's use is listed in ARCHITECTURE.md (`cluster-agent`, RBAC), and
/// `cluster-agent/tests/agent/least_privilege.rs` fails when one is granted but not used on a real API server.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        // One namespace per project, applied (with its Pod Security label) on first use; the agent's own
        // listed once at start, so a restart applies none again. Never deleted by the agent.
        rule("", &["namespaces"], &["list", "create", "patch"]),
        // The mirror applies instances, lists them at start and deletes them on deprovision; the mirror and
        // the controller watch them, the finalizer is patched in and out, and the backup runner reads one
        // by name (`get`) before making its backup.
        rule("cp.example.com", &["managedinstances"], &["get", "list", "watch", "create", "patch", "delete"]),
        rule("cp.example.com", &["managedinstances/status"], &["patch"]),
        rule("apps", &["statefulsets"], RENDERED),
        rule("", &["services", "configmaps"], RENDERED),
        // Secrets: the credentials are generated in the cluster (`create`, once), read by name to answer
        // a credentials request and to rotate them (`get`), and patched by a rotation; the backup store's
        // keys are applied.
        rule("", &["secrets"], &["get", "list", "watch", "create", "patch", "delete"]),
        // Claims are made by the StatefulSet controller; the agent grows them and removes them after the set.
        rule("", &["persistentvolumeclaims"], &["list", "watch", "patch", "delete"]),
        // CloudNativePG's Cluster; `get`: a credentials request checks that CloudNativePG's Secret is this
        // Cluster's.
        rule("postgresql.cnpg.io", &["clusters"], &["get", "list", "watch", "create", "patch", "delete"]),
        // PostgreSQL backups: each instance's ObjectStore (Barman Cloud plugin) and one CloudNativePG
        // Backup per backup, annotated once reported.
        rule("barmancloud.cnpg.io", &["objectstores"], RENDERED),
        rule("postgresql.cnpg.io", &["backups"], RENDERED),
        // Network access and egress: each instance's NetworkPolicy, each namespace's egress policies.
        rule("networking.k8s.io", &["networkpolicies"], RENDERED),
        // Rotation, restore and backup Jobs; a backup's annotated once reported.
        rule("batch", &["jobs"], RENDERED),
        // The users Job of an InfluxDB instance runs as an account of its own whose Role allows `get` and
        // `patch` of the users' Secrets only (`render::user_tokens`): applied before the Job, deleted after
        // it. Granting that Role takes holding its permissions, which the Secrets rule above does.
        rule("", &["serviceaccounts"], &["create", "patch", "delete"]),
        rule("rbac.authorization.k8s.io", &["roles", "rolebindings"], &["create", "patch", "delete"]),
        // Pods are only read: the kubelet reports there why a container does not run, and a backup Job's
        // upload container its result (listed by the Job's label).
        rule("", &["pods"], &["list", "watch"]),
        // Replicas elect the converging one through one Lease (`leader`, with `--leader-election-namespace`):
        // read and renewed by name; created once, by whichever replica first finds none (a POST create
        // cannot be restricted by name, RBAC docs above).
        rule("coordination.k8s.io", &["leases"], &["create"]),
        PolicyRule {
            resource_names: Some(vec![crate::leader::LEASE_NAME.to_owned()]),
            ..rule("coordination.k8s.io", &["leases"], &["get", "update"])
        },
        // `--install-crd` applies the ManagedInstance CRD, and only that one: a CRD is cluster-wide, and
        // `patch` on every CRD would let the agent rewrite CloudNativePG's. Names can restrict the
        // `create` of an apply, since the apply's create check carries the name (patch.go above), though
        // not a POST create (kubernetes.io/docs/reference/access-authn-authz/rbac/, "Referring to
        // resources": "You cannot restrict create or deletecollection requests by their resource name").
        PolicyRule {
            resource_names: Some(vec![CRD_NAME.to_owned()]),
            ..rule("apiextensions.k8s.io", &["customresourcedefinitions"], &["create", "patch"])
        },
    ]
}

/// The ManagedInstance CRD's name, the only CRD the agent may write.
pub const CRD_NAME: &str = "managedinstances.cp.example.com";

/// Every `(verb, group, resource)` [`rules`] grant, `resource` with `/subresource` if any.
pub fn granted() -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for rule in rules() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    all.push((verb.clone(), group.clone(), resource.clone()));
                }
            }
        }
    }
    all
}

/// Whether [`rules`] allow `verb` on `resource` (plural, with `/subresource` if any) of API `group`, for
/// some name: a rule's `resourceNames` are left to the API server (the agent writes one CRD, by name).
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

//! The agent's NetworkPolicies, as the real API server holds them, evaluated by an upstream policy
//! engine instead of our own reading: `tests/netpol-eval`, a small Go program around the matcher of
//! github.com/mattfenwick/cyclonus v0.5.6 (`pkg/matcher/builder.go` `BuildNetworkPolicies`,
//! `pkg/matcher/policy.go` `IsTrafficAllowed`), built by `./dev tools` into `.tools/netpol-eval-v0.5.6`.
//! Two projects' instances are provisioned (acme: a MongoDB with an ACL, an InfluxDB and a PostgreSQL;
//! other: a MongoDB of the same name); the policies of both namespaces, the namespaces and the pods the agent's
//! objects make (its StatefulSets' templates as the API server holds them, and its rotation, backup and
//! restore Jobs' templates rendered from the ManagedInstance read back; CloudNativePG's instance pods and
//! PostgreSQL's configuration check) go to the evaluator, which
//! answers: every Job that connects to its instance (label `cp.example.com/client-of`) reaches its
//! service port and nothing else of it; the ACL's block reaches the service port only; another instance's
//! and another tenant's pods are refused; no pod reaches the cloud's metadata service; DNS is reachable.

use crate::common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use cluster_agent::{
    crd::{AspectGenerations, ManagedInstance, RestoreTarget},
    render::{self, backup, rotation},
};
use common::*;
use domain::{InstanceCommand, ProvisionInstance, ServiceType, instance::AclEntry};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Namespace, networking::v1::NetworkPolicy};
use kube::{Api, ResourceExt as _, api::ListParams};
use serde_json::{Value, json};
use streams::CommandMetadata;
use tokio::io::AsyncWriteExt as _;

/// The cyclonus module version `./dev` builds the evaluator from (`CYCLONUS_VERSION` there, and
/// tests/netpol-eval/go.mod).
const CYCLONUS_VERSION: &str = "v0.5.6";

/// The evaluator: `$CP_NETPOL_EVAL`, else where `./dev tools` builds it. Never skipped when missing.
fn evaluator() -> PathBuf {
    let path = std::env::var_os("CP_NETPOL_EVAL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../.tools/netpol-eval-{CYCLONUS_VERSION}/netpol-eval"))
    });
    assert!(
        path.is_file(),
        "{} not found: run `./dev tools` (it builds the NetworkPolicy evaluator from tests/netpol-eval with \
         cyclonus {CYCLONUS_VERSION} from the Go module proxy into .tools/), or set CP_NETPOL_EVAL",
        path.display()
    );
    path
}

/// A pod in the evaluator's input.
#[derive(Clone)]
struct Pod {
    namespace: String,
    name: String,
    labels: Value,
    /// what it is, for the messages
    what: String,
}

impl Pod {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A connection's ends in the evaluator's input: a pod (`namespace/name`) or an address.
fn pod(p: &Pod) -> Value {
    json!({"pod": p.key()})
}

fn address(ip: &str) -> Value {
    json!({"ip": ip})
}

/// One question and the answer the policies must give.
struct Query {
    from: Value,
    to: Value,
    port: u16,
    protocol: &'static str,
    allowed: bool,
    what: String,
}

/// Asks the evaluator; the `(query, why)` of every answer that differs from the expected one.
async fn evaluate(
    policies: &[NetworkPolicy],
    namespaces: &[Namespace],
    pods: &[Pod],
    queries: &[Query],
) -> Vec<String> {
    let input = json!({
        "policies": policies,
        "namespaces": namespaces.iter().map(|n| json!({"name": n.name_any(), "labels": n.labels()})).collect::<Vec<_>>(),
        // Addresses from a pod network of the tests' choosing: ipBlocks are matched on them (cyclonus
        // pkg/matcher/ippeermatcher.go), so none may fall in an ACL block or the metadata address.
        "pods": pods.iter().enumerate().map(|(i, p)| json!({
            "namespace": p.namespace, "name": p.name, "labels": p.labels,
            "ip": format!("10.244.{}.{}", i / 200, i % 200 + 10),
        })).collect::<Vec<_>>(),
        "queries": queries.iter().map(|q| json!({
            "from": q.from, "to": q.to, "port": q.port, "protocol": q.protocol,
        })).collect::<Vec<_>>(),
    });
    let mut child = tokio::process::Command::new(evaluator())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the NetworkPolicy evaluator");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(&input).unwrap()).await.expect("write the evaluator's input");
    drop(stdin);
    let output = child.wait_with_output().await.expect("the evaluator's answer");
    assert!(output.status.success(), "the evaluator failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("the evaluator's JSON");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), queries.len(), "one answer per query");
    queries
        .iter()
        .zip(results)
        .filter(|(q, r)| r["allowed"].as_bool() != Some(q.allowed))
        .map(|(q, r)| {
            format!("{} ({} expected): {}", q.what, if q.allowed { "allowed" } else { "denied" }, r["why"])
        })
        .collect()
}

/// Provisions instance `name` in `project` on c1 (the harness's own helper is for acme only).
async fn provision_in(world: &World, project: &str, name: &str, service: ServiceType, version: &str) {
    let id = uuid::Uuid::now_v7();
    let command = InstanceCommand::Provision(ProvisionInstance::new(
        id, project, name, service, version, "starter", "c1",
    ));
    let metadata = CommandMetadata::new(domain::OperationKind::Provision, "test");
    world.commands.execute(project, id, command, None, metadata).await.expect("provision");
}

/// Waits until namespace `namespace` holds a ready ManagedInstance `name` whose network access is applied
/// at its current generation, and returns it.
async fn ready(admin: &kube::Client, namespace: &str, name: &str, acl: &[&str]) -> ManagedInstance {
    let api: Api<ManagedInstance> = Api::namespaced(admin.clone(), namespace);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let found = api.get_opt(name).await.expect("reading the instance");
        if let Some(mi) = &found {
            let status = mi.status.as_ref().map(|s| serde_json::to_value(s).unwrap()).unwrap_or_default();
            let applied = status["applied"]["networkAccess"].as_u64();
            if status["phase"] == "Ready" && applied.is_some() && mi.spec.acl == acl {
                return mi.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{namespace}/{name} not ready: {found:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pods of the Jobs the agent runs against `mi` (rotation, backup, restore), from their rendered
/// templates: each must carry the client label, which is what the instance's policy admits.
fn job_pods(mi: &ManagedInstance) -> Vec<Pod> {
    let namespace = mi.namespace().unwrap();
    let mut mi = mi.clone();
    let backup_id = uuid::Uuid::nil();
    let key = format!("{}/{}/{backup_id}", mi.spec.project, mi.spec.instance_id);
    mi.spec.restore =
        Some(RestoreTarget { backup_id: backup_id.to_string(), location: key.clone(), target_time: None });
    mi.spec.aspects = Some(AspectGenerations { restore: 5, ..mi.spec.aspects.unwrap_or_default() });
    let jobs = [
        ("rotation", rotation::job(&mi, 5)),
        ("backup", backup::job(&mi, backup_id, &key)),
        ("restore", backup::restore_job(&mi, 5, &key)),
    ];
    jobs.into_iter()
        .map(|(what, job)| {
            let job = job.unwrap_or_else(|| panic!("{} has a {what} Job", mi.spec.service));
            let labels = job.object["spec"]["template"]["metadata"]["labels"].clone();
            assert_eq!(
                labels[render::job::CLIENT_OF_LABEL],
                mi.spec.instance_id,
                "the {what} Job's pods are {}'s clients",
                mi.name_any()
            );
            Pod {
                namespace: namespace.clone(),
                name: format!("{}-{what}", mi.name_any()),
                labels,
                what: format!("{namespace}/{}'s {what} Job", mi.name_any()),
            }
        })
        .collect()
}

/// PostgreSQL's one Job that connects to it, its configuration check (`render/pg_settings.rs`), from its
/// rendered template (the instance was provisioned without parameters to check, so with one here).
fn check_job_pods(mi: &ManagedInstance) -> Vec<Pod> {
    let namespace = mi.namespace().unwrap();
    let mut mi = mi.clone();
    mi.spec.config = [("work_mem_kib".to_owned(), json!(4096))].into();
    let job = render::render(&mi, None)
        .into_iter()
        .find(render::pg_settings::is_verification_job)
        .expect("PostgreSQL's configuration check");
    let labels = job.object["spec"]["template"]["metadata"]["labels"].clone();
    let what = format!("{namespace}/{}'s configuration check Job", mi.name_any());
    vec![Pod { namespace, name: format!("{}-pgconf", mi.name_any()), labels, what }]
}

/// The pods of `mi`'s workload as the API server holds them, two replicas' worth, for the replication
/// traffic between them: its StatefulSet's template, or, for PostgreSQL, the labels of CloudNativePG's
/// instance pod (made by the operator's stand-in as CloudNativePG makes it, with the Cluster's
/// `inheritedMetadata` labels: kubeenv `cnpg.rs`).
async fn workload_pods(admin: &kube::Client, mi: &ManagedInstance) -> Vec<Pod> {
    let namespace = mi.namespace().unwrap();
    if mi.spec.service == "postgresql" {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), &namespace);
        let selector = format!("cnpg.io/cluster={},cnpg.io/podRole=instance", mi.name_any());
        let pods = api.list(&ListParams::default().labels(&selector)).await.expect("the instance pods");
        let first =
            pods.items.first().unwrap_or_else(|| panic!("{namespace}/{}: an instance pod", mi.name_any()));
        let labels = serde_json::to_value(first.labels()).unwrap();
        return (1..=2)
            .map(|i| Pod {
                namespace: namespace.clone(),
                name: format!("{}-{i}", mi.name_any()),
                labels: labels.clone(),
                what: format!("{namespace}/{}-{i}", mi.name_any()),
            })
            .collect();
    }
    let api: Api<StatefulSet> = Api::namespaced(admin.clone(), &namespace);
    let selector = format!("{}={}", render::INSTANCE_LABEL, mi.spec.instance_id);
    let sets = api.list(&ListParams::default().labels(&selector)).await.expect("the StatefulSets");
    assert_eq!(sets.items.len(), 1, "{namespace}/{}: one StatefulSet", mi.name_any());
    let set = &sets.items[0];
    let template = serde_json::to_value(&set.spec).unwrap()["template"].clone();
    (0..2)
        .map(|i| Pod {
            namespace: namespace.clone(),
            name: format!("{}-{i}", set.name_any()),
            labels: template["metadata"]["labels"].clone(),
            what: format!("{namespace}/{}-{i}", set.name_any()),
        })
        .collect()
}

#[tokio::test]
async fn an_upstream_policy_engine_admits_each_instances_clients_and_acl_and_nothing_else() {
    // Fails here, before any cluster starts, when the evaluator is not built.
    evaluator();
    let world = World::start(Backend::Real, &["c1"]).await;
    let cluster = world.cluster("c1");
    let Kube::Real { admin, .. } = &cluster.kube else { unreachable!("a real API server") };

    const ACL: &str = "203.0.113.0/24";
    let mongo = world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    world.provision("c1", "metrics", ServiceType::Influxdb, "2.7").await;
    world.provision("c1", "ledger", ServiceType::Postgresql, "16").await;
    provision_in(&world, "other", "mongo", ServiceType::Mongodb, "7.0").await;
    world
        .command(
            mongo,
            InstanceCommand::ReplaceAcl { entries: vec![AclEntry::new(ACL, "office")], allow_public: false },
        )
        .await;
    let acme_mongo = ready(admin, "cp-acme", "mongo", &[ACL]).await;
    let acme_influx = ready(admin, "cp-acme", "metrics", &[]).await;
    let acme_postgres = ready(admin, "cp-acme", "ledger", &[]).await;
    let other_mongo = ready(admin, "cp-other", "mongo", &[]).await;

    // Everything as the API server holds it: the policies of both project namespaces (the instances'
    // `<name>-access` and the namespaces' `cp-egress`), and every namespace's labels.
    let mut policies = Vec::new();
    for namespace in ["cp-acme", "cp-other"] {
        let api: Api<NetworkPolicy> = Api::namespaced(admin.clone(), namespace);
        policies.extend(api.list(&ListParams::default()).await.expect("the NetworkPolicies").items);
    }
    let mut names: Vec<String> =
        policies.iter().map(|p| format!("{}/{}", p.namespace().unwrap(), p.name_any())).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cp-acme/cp-egress",
            "cp-acme/ledger-access",
            "cp-acme/metrics-access",
            "cp-acme/mongo-access",
            "cp-other/cp-egress",
            "cp-other/mongo-access"
        ]
    );
    let namespaces = Api::<Namespace>::all(admin.clone()).list(&ListParams::default()).await.unwrap().items;

    let mut instances = Vec::new();
    for mi in [&acme_mongo, &acme_influx, &other_mongo] {
        instances.push((mi, workload_pods(admin, mi).await, job_pods(mi)));
    }
    instances.push((
        &acme_postgres,
        workload_pods(admin, &acme_postgres).await,
        check_job_pods(&acme_postgres),
    ));
    // CoreDNS's pods (labels of kubernetes `cluster/addons/dns/coredns`), and another kube-system pod.
    let dns = Pod {
        namespace: "kube-system".into(),
        name: "coredns".into(),
        labels: json!({"k8s-app": "kube-dns"}),
        what: "DNS".into(),
    };
    let etcd = Pod {
        namespace: "kube-system".into(),
        name: "etcd".into(),
        labels: json!({"component": "etcd"}),
        what: "kube-system's etcd".into(),
    };
    let mut pods = vec![dns.clone(), etcd.clone()];
    for (_, workload, jobs) in &instances {
        pods.extend(workload.iter().cloned());
        pods.extend(jobs.iter().cloned());
    }

    let mut queries = Vec::new();
    let mut ask = |from: Value, to: Value, port: u16, protocol: &'static str, allowed: bool, what: String| {
        queries.push(Query { from, to, port, protocol, allowed, what });
    };
    for (mi, workload, jobs) in &instances {
        let port = render::service_port(&mi.spec.service);
        let target = &workload[0];
        // Replication: the instance's own pods reach each other.
        ask(
            pod(&workload[1]),
            pod(target),
            port,
            "TCP",
            true,
            format!("{} → {}", workload[1].what, target.what),
        );
        for job in jobs {
            ask(pod(job), pod(target), port, "TCP", true, format!("{} → {}:{port}", job.what, target.what));
            ask(pod(job), pod(target), 22, "TCP", false, format!("{} → {}:22", job.what, target.what));
        }
        // Every other instance's pods and Jobs, of this project or another, are refused.
        for (other, other_workload, other_jobs) in &instances {
            if other.spec.instance_id == mi.spec.instance_id {
                continue;
            }
            for stranger in other_workload.iter().take(1).chain(other_jobs) {
                ask(
                    pod(stranger),
                    pod(target),
                    port,
                    "TCP",
                    false,
                    format!("{} → {}:{port}", stranger.what, target.what),
                );
            }
        }
        // The ACL's block reaches the service port only; an address outside it nothing.
        let has_acl = mi.spec.acl.iter().any(|a| a == ACL);
        ask(
            address("203.0.113.7"),
            pod(target),
            port,
            "TCP",
            has_acl,
            format!("{ACL} → {}:{port}", target.what),
        );
        ask(address("203.0.113.7"), pod(target), 22, "TCP", false, format!("{ACL} → {}:22", target.what));
        ask(
            address("198.51.100.7"),
            pod(target),
            port,
            "TCP",
            false,
            format!("198.51.100.7 → {}:{port}", target.what),
        );
        // Egress of every pod of the instance: DNS yes, the metadata service and other kube-system pods no.
        for p in workload.iter().chain(jobs) {
            ask(pod(p), pod(&dns), 53, "UDP", true, format!("{} → DNS udp", p.what));
            ask(pod(p), pod(&dns), 53, "TCP", true, format!("{} → DNS tcp", p.what));
            ask(pod(p), pod(&etcd), 2379, "TCP", false, format!("{} → {}", p.what, etcd.what));
            for port in [80, 443] {
                ask(
                    pod(p),
                    address("169.254.169.254"),
                    port,
                    "TCP",
                    false,
                    format!("{} → metadata:{port}", p.what),
                );
            }
        }
    }
    assert!(queries.len() > 100, "{} queries", queries.len());
    let wrong = evaluate(&policies, &namespaces, &pods, &queries).await;
    assert!(wrong.is_empty(), "{} of {} answers differ:\n{}", wrong.len(), queries.len(), wrong.join("\n"));
    cluster.assert_permitted();
}

//! The project namespaces' egress policies (`render::egress`): the golden file, what they let each pod
//! the agent makes reach (evaluated by the rules of k8s.io/api v0.36.1 `networking/v1/types.go`), the
//! settings refused, and, on the real API server, that the agent makes them with a project's namespace,
//! that the API server accepts them, and that the agent puts them back when deleted or widened by hand.

use crate::common;
use crate::fixture;

use std::{net::IpAddr, path::PathBuf, str::FromStr as _, time::Duration};

use cluster_agent::render::{
    self, ChildKind, backup,
    egress::{API_SERVER_POLICY_NAME, Egress, EgressError, EgressSettings, POLICY_NAME},
    rotation,
};
use common::*;
use domain::ServiceType;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};

fn store(endpoint: &str) -> backup::StoreTarget {
    backup::StoreTarget { endpoint: endpoint.into(), bucket: "cp-backups".into() }
}

fn blocks(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| IpNet::from_str(c).unwrap()).collect()
}

/// A store at 10.20.0.5:8333 and an API server at 10.0.0.10:6443.
fn egress() -> Egress {
    let settings =
        EgressSettings { api_server_blocks: blocks(&["10.0.0.10/32"]), ..EgressSettings::default() };
    Egress::new(&settings, Some(&store("http://10.20.0.5:8333"))).unwrap()
}

#[test]
fn the_egress_policies_match_the_golden_file() {
    let text = serde_json::to_string_pretty(&egress().policies("cp-acme")).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/egress.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).expect("tests/golden/egress.json; run with UPDATE_GOLDEN=1");
    assert_eq!(
        expected, text,
        "tests/golden/egress.json differs; run with UPDATE_GOLDEN=1 and review the diff"
    );
}

/// A connection's far end.
enum To<'a> {
    /// a pod: its namespace's labels and its own
    Pod { namespace: &'a str, namespace_labels: Value, labels: Value },
    /// an address outside the pod network
    Ip(&'a str),
}

/// Whether `selector` (a `metav1.LabelSelector` of `matchLabels` and `Exists` expressions, all the
/// agent renders) selects `labels`; an empty selector selects everything.
fn selects(selector: &Value, labels: &Value) -> bool {
    let by_label = selector["matchLabels"].as_object().into_iter().flatten().all(|(k, v)| &labels[k] == v);
    let by_expression = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        assert_eq!(e["operator"], "Exists", "only Exists is evaluated here: {e}");
        labels.get(e["key"].as_str().unwrap()).is_some()
    });
    by_label && by_expression
}

/// Whether a pod of `namespace` with `labels` may open a `protocol` connection to `to` on `port` under
/// `policies` (k8s.io/api v0.36.1 `networking/v1/types.go`): a pod no policy of type Egress selects is
/// not isolated; an isolated one may reach what some egress rule of a policy selecting it allows — a
/// rule allows when its `to` is empty or has a matching peer, and its `ports` are empty or include the
/// port (protocol TCP when none is named). A peer's `ipBlock` matches addresses in its `cidr`; a peer with
/// selectors matches pods, in the policy's namespace when it has no `namespaceSelector`, and with both
/// selectors the pods the pod selector picks in the namespaces the namespace selector picks.
fn allows(policies: &[Value], namespace: &str, labels: &Value, to: &To, protocol: &str, port: u16) -> bool {
    let selecting: Vec<&Value> = policies
        .iter()
        .filter(|p| p["metadata"]["namespace"] == namespace)
        .filter(|p| p["spec"]["policyTypes"].as_array().unwrap().iter().any(|t| t == "Egress"))
        .filter(|p| selects(&p["spec"]["podSelector"], labels))
        .collect();
    if selecting.is_empty() {
        return true;
    }
    let peer_matches = |peer: &Value| match to {
        To::Ip(address) => peer.get("ipBlock").is_some_and(|block| {
            assert!(block.get("except").is_none(), "no except is rendered");
            let cidr = IpNet::from_str(block["cidr"].as_str().unwrap()).unwrap();
            cidr.contains(&IpAddr::from_str(address).unwrap())
        }),
        To::Pod { namespace: far, namespace_labels, labels: far_labels } => {
            peer.get("ipBlock").is_none()
                && match peer.get("namespaceSelector") {
                    None => *far == namespace,
                    Some(ns) => selects(ns, namespace_labels),
                }
                && peer.get("podSelector").is_none_or(|s| selects(s, far_labels))
        }
    };
    selecting.iter().flat_map(|p| p["spec"]["egress"].as_array().unwrap()).any(|rule| {
        let to_ok = rule["to"].as_array().is_none_or(|to| to.is_empty() || to.iter().any(&peer_matches));
        let port_ok = rule["ports"].as_array().is_none_or(|ports| {
            ports.is_empty()
                || ports
                    .iter()
                    .any(|p| p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        });
        to_ok && port_ok
    })
}

/// The labels of every pod the agent's objects make for `service`: the workload's and its Jobs'.
fn pod_labels(service: &str, version: &str) -> Vec<(String, Value)> {
    let mut mi = fixture::instance(service, version, json!({}));
    let mut pods = Vec::new();
    for child in render::render(&mi, None) {
        if child.kind == ChildKind::StatefulSet {
            pods.push(("pod".to_owned(), child.object["spec"]["template"]["metadata"]["labels"].clone()));
        }
    }
    if service == "postgresql" {
        // CloudNativePG's instance pods: the Cluster's inheritedMetadata plus `cnpg.io/cluster`
        // (CloudNativePG v1.30.0 `pkg/specs/pods.go`).
        let cluster = render::render(&mi, None).into_iter().find(|c| c.object["kind"] == "Cluster").unwrap();
        let mut labels = cluster.object["spec"]["inheritedMetadata"]["labels"].clone();
        labels["cnpg.io/cluster"] = json!("orders");
        pods.push(("cnpg pod".to_owned(), labels));
    }
    let backup_id = uuid::Uuid::nil();
    let key = format!("acme/{}/{backup_id}", mi.spec.instance_id);
    let mut jobs = vec![rotation::job(&mi, 5), backup::job(&mi, backup_id, &key)];
    mi.spec.restore = Some(cluster_agent::crd::RestoreTarget {
        backup_id: backup_id.to_string(),
        location: key.clone(),
        target_time: None,
    });
    jobs.push(backup::restore_job(&mi, 6, &key));
    for job in jobs.into_iter().flatten() {
        pods.push((job.name.clone(), job.object["spec"]["template"]["metadata"]["labels"].clone()));
    }
    pods
}

/// Every pod the agent makes reaches DNS, the instance's pods and the store's port; none reaches the
/// cloud's metadata service, another namespace's pods, the store on another port, or any other address;
/// only CloudNativePG's pods reach the API server.
#[test]
fn every_pod_reaches_dns_its_instance_and_the_store_and_nothing_else() {
    let policies = egress().policies("cp-acme");
    let ns = |name: &str| json!({"kubernetes.io/metadata.name": name});
    let dns = To::Pod {
        namespace: "kube-system",
        namespace_labels: ns("kube-system"),
        labels: json!({"k8s-app": "kube-dns"}),
    };
    let other_kube_system = To::Pod {
        namespace: "kube-system",
        namespace_labels: ns("kube-system"),
        labels: json!({"component": "etcd"}),
    };
    let mi = fixture::instance("mongodb", "7.0", json!({}));
    let instance_labels =
        json!({"app.kubernetes.io/instance": "orders", render::INSTANCE_LABEL: mi.spec.instance_id});
    let own_instance =
        To::Pod { namespace: "cp-acme", namespace_labels: ns("cp-acme"), labels: instance_labels.clone() };
    let other_project =
        To::Pod { namespace: "cp-other", namespace_labels: ns("cp-other"), labels: instance_labels.clone() };
    let same_ns_stranger =
        To::Pod { namespace: "cp-acme", namespace_labels: ns("cp-acme"), labels: json!({"app": "x"}) };
    for (service, version) in
        [("mongodb", "7.0"), ("influxdb", "2.7"), ("grafana", "11.6"), ("postgresql", "16")]
    {
        for (what, labels) in pod_labels(service, version) {
            let may = |to: &To, protocol: &str, port: u16| {
                allows(&policies, "cp-acme", &labels, to, protocol, port)
            };
            let who = format!("{service} {what} {labels}");
            assert!(may(&dns, "UDP", 53) && may(&dns, "TCP", 53), "{who}: DNS");
            assert!(!may(&dns, "TCP", 80), "{who}: the DNS pods on another port");
            assert!(!may(&other_kube_system, "UDP", 53), "{who}: another kube-system pod");
            assert!(may(&own_instance, "TCP", 27017), "{who}: its instance");
            assert!(!may(&other_project, "TCP", 27017), "{who}: another project's instance");
            assert!(!may(&same_ns_stranger, "TCP", 80), "{who}: a pod that is no instance's");
            assert!(may(&To::Ip("10.20.0.5"), "TCP", 8333), "{who}: the store");
            assert!(!may(&To::Ip("10.20.0.5"), "TCP", 22), "{who}: the store's host on another port");
            for address in ["169.254.169.254", "fd00:ec2::254", "10.96.0.1", "8.8.8.8"] {
                for port in [80, 443, 53] {
                    assert!(!may(&To::Ip(address), "TCP", port), "{who}: {address}:{port}");
                }
            }
            let cnpg = labels.get("cnpg.io/cluster").is_some();
            assert_eq!(may(&To::Ip("10.0.0.10"), "TCP", 6443), cnpg, "{who}: the API server");
        }
    }
}

#[test]
fn without_settings_the_store_endpoint_address_is_its_block_and_no_pod_reaches_the_api_server() {
    let egress = Egress::new(&EgressSettings::default(), Some(&store("https://[2001:db8::5]/"))).unwrap();
    let policies = egress.policies("cp-acme");
    assert_eq!(policies.len(), 1, "no API server policy without its blocks: {policies:#?}");
    assert!(!egress.reaches_api_server());
    assert_eq!(
        policies[0]["spec"]["egress"][2],
        json!({"to": [{"ipBlock": {"cidr": "2001:db8::5/128"}}], "ports": [{"protocol": "TCP", "port": 443}]})
    );
    // No store: DNS and the instances only.
    let policies = Egress::new(&EgressSettings::default(), None).unwrap().policies("cp-acme");
    assert_eq!(policies[0]["spec"]["egress"].as_array().map(Vec::len), Some(2), "{policies:#?}");
}

#[test]
fn a_store_named_by_a_host_needs_its_blocks() {
    let named = store("http://s3.example.internal:8333");
    let egress = Egress::new(&EgressSettings::default(), Some(&named)).unwrap();
    assert!(egress.store_unreachable, "no block for a host name");
    let settings = EgressSettings { store_blocks: blocks(&["10.20.0.0/24"]), ..EgressSettings::default() };
    let egress = Egress::new(&settings, Some(&named)).unwrap();
    assert!(!egress.store_unreachable);
    assert_eq!(
        egress.policies("cp-acme")[0]["spec"]["egress"][2],
        json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 8333}]})
    );
}

#[test]
fn blocks_reaching_link_local_addresses_are_refused() {
    for cidr in
        ["169.254.169.254/32", "169.0.0.0/8", "0.0.0.0/0", "fe80::1/128", "::/0", "::ffff:169.254.0.0/120"]
    {
        let block = IpNet::from_str(cidr).unwrap();
        for settings in [
            EgressSettings { store_blocks: vec![block], ..EgressSettings::default() },
            EgressSettings { api_server_blocks: vec![block], ..EgressSettings::default() },
        ] {
            assert_eq!(
                Egress::new(&settings, Some(&store("http://10.20.0.5:8333"))),
                Err(EgressError::LinkLocal(block)),
                "{cidr}"
            );
        }
    }
    assert!(matches!(
        Egress::new(&EgressSettings::default(), Some(&store("http://169.254.169.254/latest"))),
        Err(EgressError::LinkLocal(_))
    ));
}

/// On the real API server: a project's namespace gets the egress policies as rendered, which the API
/// server accepts (validation of networking.k8s.io/v1), and the agent keeps them: one deleted by hand is
/// made again, one widened by hand is put back.
#[tokio::test]
async fn the_agent_makes_and_keeps_the_egress_policies_of_a_project_namespace() {
    let mut world = World::without_agents(Backend::Real, &["c1"], Duration::from_millis(20)).await;
    let settings = EgressSettings {
        store_blocks: blocks(&["10.20.0.0/24"]),
        api_server_blocks: blocks(&["10.0.0.10/32", "2001:db8::10/128"]),
        api_server_port: 6443,
    };
    world.egress = settings.clone();
    world.send_backups_to_address("http://10.20.0.5:8333");
    world.start_agent(0).await;
    let cluster = world.cluster("c1");
    world.provision("c1", "mongo", ServiceType::Mongodb, "7.0").await;
    cluster.converges("provisioned", |v| v.ready_at("mongo", 1)).await;
    let Kube::Real { admin, .. } = &cluster.kube else { unreachable!("a real API server") };
    let api: Api<NetworkPolicy> = Api::namespaced(admin.clone(), NAMESPACE);
    let wanted = Egress::new(&settings, world.backup_store.as_ref()).unwrap().policies(NAMESPACE);
    assert_eq!(wanted.len(), 3, "the namespace's, CloudNativePG's to the API server, the users Jobs'");
    let kept = |name: &'static str| {
        let api = api.clone();
        let spec = wanted.iter().find(|p| p["metadata"]["name"] == name).unwrap()["spec"].clone();
        async move {
            let deadline = tokio::time::Instant::now() + CONVERGE;
            loop {
                let found = api.get_opt(name).await.expect("reading the policy");
                let found_spec = found.as_ref().map(|p| serde_json::to_value(p).unwrap()["spec"].clone());
                if found_spec.as_ref() == Some(&spec) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{name}: not as rendered: {found_spec:#?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    kept(POLICY_NAME).await;
    kept(API_SERVER_POLICY_NAME).await;
    kept(cluster_agent::render::egress::USERS_API_SERVER_POLICY_NAME).await;

    api.delete(POLICY_NAME, &DeleteParams::default()).await.expect("deleting by hand");
    kept(POLICY_NAME).await;

    // Widened by hand: every destination allowed. The agent's next apply puts its own rules back.
    let widen = json!({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
    api.patch(POLICY_NAME, &PatchParams::default(), &Patch::Merge(&widen)).await.expect("editing by hand");
    kept(POLICY_NAME).await;
    api.delete(API_SERVER_POLICY_NAME, &DeleteParams::default()).await.expect("deleting by hand");
    kept(API_SERVER_POLICY_NAME).await;
    cluster.assert_permitted();
}

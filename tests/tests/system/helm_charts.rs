//! The Helm charts of `deploy/helm/`: `helm lint --strict` and `helm template` with every value set in each
//! chart's `ci/`, the rendered objects validated against Kubernetes' own OpenAPI schemas (PyPI
//! `kubernetes-validate`, strict: unknown fields fail) for the oldest and the newest release the charts
//! target, the agent chart's CRD and RBAC compared with the agent's code, the bundled NATS configuration
//! (the vendored nats-io/k8s chart's output with the accounts block of `streams::identities`) checked by
//! nats-server itself, and both charts installed into a real API server (`kubeenv`: etcd, kube-apiserver,
//! the controllers and kwok's fake node), where every object must be accepted and every workload become
//! ready, the migration Job included (kwok completes its pod), then upgraded through the pre-upgrade hook.
//!
//! Helm is built by `./dev` from its Go module into `.tools/helm-v4.3.2` (`CP_HELM_BIN`), and
//! kubernetes-validate installed into `.tools/venv` (`CP_KUBERNETES_VALIDATE`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use kubeenv::{ControlPlane, Identity};
use serde_json::Value;
use streams::{
    Settings,
    identities::{NatsRole, accounts_conf, ensure_identities},
};

const HELM_VERSION: &str = "v4.3.2";
/// The Kubernetes releases the rendered objects must be valid for: the oldest the charts support (the
/// API pods' `preStop.sleep` is beta and on from 1.30) and the tests' API server's.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.36.0"];
const AGENT_NAMESPACE: &str = "cp-system";
const CONTROL_PLANE_NAMESPACE: &str = "cp";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart(name: &str) -> PathBuf {
    repo().join("deploy/helm").join(name)
}

fn tool(variable: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(variable).map(PathBuf::from).unwrap_or_else(|| repo().join(default));
    assert!(
        path.is_file(),
        "\n\n!!!!!!!! {what} not found at {}: run `./dev tools` (it installs it into .tools/), or set {variable} !!!!!!!!\n",
        path.display()
    );
    path
}

fn helm() -> Command {
    Command::new(tool(
        "CP_HELM_BIN",
        &format!(".tools/helm-{HELM_VERSION}/helm"),
        &format!("Helm {HELM_VERSION} (built by ./dev from helm.sh/helm/v4 on the Go module proxy)"),
    ))
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The NATS identities and accounts block an operator makes with `cp-api --write-nats-accounts`, for two
/// member clusters.
struct Identities {
    dir: tempfile::TempDir,
}

impl Identities {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clusters = ["eu-1", "eu-2"];
        let mut roles = vec![NatsRole::Admin, NatsRole::ControlPlane];
        roles.extend(clusters.iter().map(|c| NatsRole::Agent { cluster: (*c).to_owned() }));
        let keys = ensure_identities(&dir.path().join("identities"), &roles).unwrap();
        let agents: Vec<_> =
            clusters.iter().map(|c| (*c).to_owned()).zip(keys[2..].iter().cloned()).collect();
        let conf = accounts_conf(&Settings::default(), &keys[0], &keys[1..2], &agents);
        std::fs::write(dir.path().join("accounts.conf"), conf).unwrap();
        Self { dir }
    }

    fn accounts(&self) -> PathBuf {
        self.dir.path().join("accounts.conf")
    }

    fn seed(&self, file: &str) -> PathBuf {
        self.dir.path().join("identities").join(file)
    }
}

/// The value sets of a chart (its `ci/` files), by file name.
fn value_sets(chart_name: &str) -> Vec<PathBuf> {
    let mut sets: Vec<_> = std::fs::read_dir(chart(chart_name).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sets.sort();
    assert!(sets.len() >= 2, "{chart_name}: expected several value sets in ci/, found {sets:?}");
    sets
}

/// The arguments every command about `chart_name` takes with the value set `values`: its namespace, the
/// values, and for the control plane the accounts block.
fn chart_args(chart_name: &str, values: &Path, identities: &Identities) -> Vec<String> {
    let mut args = vec!["--namespace".to_owned(), namespace_of(chart_name).to_owned()];
    args.extend(["--values".to_owned(), values.display().to_string()]);
    if chart_name == "control-plane" {
        args.extend([
            "--set-file".to_owned(),
            format!("natsAccounts.conf={}", identities.accounts().display()),
        ]);
    }
    args
}

fn namespace_of(chart_name: &str) -> &'static str {
    if chart_name == "cluster-agent" { AGENT_NAMESPACE } else { CONTROL_PLANE_NAMESPACE }
}

fn template(chart_name: &str, values: &Path, identities: &Identities) -> String {
    let output = run(helm()
        .args(["template", release_of(chart_name)])
        .arg(chart(chart_name))
        .args(chart_args(chart_name, values, identities)));
    String::from_utf8(output.stdout).unwrap()
}

fn release_of(chart_name: &str) -> &'static str {
    if chart_name == "cluster-agent" { "cp-agent" } else { "cp" }
}

fn objects(rendered: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(rendered)
        .unwrap_or_else(|e| panic!("helm template's output is not YAML: {e}\n{rendered}"))
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds_and_names(objects)))
}

fn kinds_and_names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"]))
        .collect()
}

#[test]
fn both_charts_pass_helm_lint_strict_with_every_value_set() {
    let identities = Identities::new();
    for chart_name in ["control-plane", "cluster-agent"] {
        for values in value_sets(chart_name) {
            let output = run(helm().args(["lint", "--strict"]).arg(chart(chart_name)).args(chart_args(
                chart_name,
                &values,
                &identities,
            )));
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(text.contains("0 chart(s) failed"), "{chart_name} with {}: {text}", values.display());
        }
    }
}

#[test]
fn every_value_set_renders_objects_that_kubernetes_schemas_accept_strictly() {
    let validate = tool(
        "CP_KUBERNETES_VALIDATE",
        ".tools/venv/bin/kubernetes-validate",
        "kubernetes-validate (PyPI, installed by ./dev into .tools/venv)",
    );
    let identities = Identities::new();
    let out = tempfile::tempdir().unwrap();
    for chart_name in ["control-plane", "cluster-agent"] {
        for values in value_sets(chart_name) {
            let rendered = template(chart_name, &values, &identities);
            let objects = objects(&rendered);
            // Secrets only by reference: no chart makes one.
            assert!(
                !objects.iter().any(|o| o["kind"] == "Secret"),
                "{chart_name} with {} renders a Secret: {:?}",
                values.display(),
                kinds_and_names(&objects)
            );
            let file =
                out.path().join(format!("{chart_name}-{}", values.file_name().unwrap().to_string_lossy()));
            std::fs::write(&file, &rendered).unwrap();
            for version in KUBERNETES_VERSIONS {
                let output = Command::new(&validate)
                    .args(["--strict", "--quiet", "--kubernetes-version", version])
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{chart_name} with {}: kubernetes-validate --strict (Kubernetes {version}) refused:\n{}{}",
                    values.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

#[test]
fn the_control_plane_runs_two_apis_two_projectors_and_three_jetstream_servers_by_default() {
    let identities = Identities::new();
    let values = chart("control-plane").join("ci/default-values.yaml");
    let objects = objects(&template("control-plane", &values, &identities));
    let replicas = |kind: &str, name: &str| find(&objects, kind, name)["spec"]["replicas"].as_i64();
    assert_eq!(replicas("Deployment", "cp-api"), Some(2));
    assert_eq!(replicas("Deployment", "cp-projector"), Some(2));
    assert_eq!(replicas("StatefulSet", "cp-nats"), Some(3));
    for name in ["cp-api", "cp-projector", "cp-nats"] {
        find(&objects, "PodDisruptionBudget", name);
    }
    for name in ["cp-api", "cp-projector", "cp-migrate", "cp-nats"] {
        let policy = find(&objects, "NetworkPolicy", name);
        assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]), "{name}");
    }
    let env = |deployment: &str| -> Vec<(String, String)> {
        find(&objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    for deployment in ["cp-api", "cp-projector"] {
        let env = env(deployment);
        assert!(env.contains(&("CP_JETSTREAM_REPLICAS".into(), "3".into())), "{deployment}: {env:?}");
        assert!(
            env.contains(&("CP_NATS_URL".into(), "nats://cp-nats.cp.svc:4222".into())),
            "{deployment}: {env:?}"
        );
    }
    // The API's probes are the API's own endpoints (api/src/routes/health.rs).
    let api = &find(&objects, "Deployment", "cp-api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(api["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(api["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The migration runs the admin identity; the API and the projector the control plane's.
    let secret_of = |spec: &Value| spec["volumes"][0]["secret"]["secretName"].as_str().unwrap().to_owned();
    let job = &find(&objects, "Job", "cp-migrate-1")["spec"]["template"]["spec"];
    assert_eq!(job["containers"][0]["args"], serde_json::json!(["--migrate"]));
    assert_eq!(secret_of(job), "cp-nats-admin");
    assert_eq!(
        secret_of(&find(&objects, "Deployment", "cp-api")["spec"]["template"]["spec"]),
        "cp-nats-control-plane"
    );
    // JetStream on every server, fsyncing every write.
    let conf = find(&objects, "ConfigMap", "cp-nats-config")["data"]["nats.conf"].as_str().unwrap();
    assert!(conf.contains("\"sync_interval\": \"always\""), "{conf}");
}

#[test]
fn the_bundled_nats_configuration_with_the_accounts_block_is_valid_for_nats_server() {
    let identities = Identities::new();
    let values = chart("control-plane").join("ci/default-values.yaml");
    let objects = objects(&template("control-plane", &values, &identities));
    let conf =
        find(&objects, "ConfigMap", "cp-nats-config")["data"]["nats.conf"].as_str().unwrap().to_owned();
    let accounts = find(&objects, "ConfigMap", "cp-nats-accounts")["data"]["accounts.conf"].as_str().unwrap();
    // Laid out as the pod mounts them: /etc/nats-config/nats.conf includes ../nats-accounts/accounts.conf.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("nats-config")).unwrap();
    std::fs::create_dir_all(root.path().join("nats-accounts")).unwrap();
    let store = root.path().join("data");
    std::fs::write(
        root.path().join("nats-config/nats.conf"),
        conf.replace("\"/data\"", &format!("{:?}", store.display().to_string())),
    )
    .unwrap();
    std::fs::write(root.path().join("nats-accounts/accounts.conf"), accounts).unwrap();
    let nats_server = testkit::nats_server_binary().unwrap_or_else(|e| panic!("{e}"));
    let output = run(Command::new(nats_server)
        .env("SERVER_NAME", "cp-nats-0")
        .arg("-t")
        .arg("-c")
        .arg(root.path().join("nats-config/nats.conf")));
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("is valid"), "{text}");
    for account in ["\"CP\"", "\"AGENT_eu-1\"", "\"AGENT_eu-2\""] {
        assert!(accounts.contains(account), "{account} missing from {accounts}");
    }
}

/// Helm's YAML round trip writes `0.0` as `0`: compare numbers by value.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), |f| serde_json::json!(f)),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect())
        }
        other => other,
    }
}

#[test]
fn the_agent_chart_installs_exactly_the_agents_own_crd_and_rbac() {
    use kube::CustomResourceExt as _;
    let identities = Identities::new();
    let values = chart("cluster-agent").join("ci/default-values.yaml");
    let objects = objects(&template("cluster-agent", &values, &identities));
    let regenerate = "regenerate: cargo run -p cluster-agent --bin crdgen > deploy/helm/cluster-agent/files/managedinstances.yaml; \
                      cargo run -p cluster-agent --bin rbacgen > deploy/helm/cluster-agent/files/rbac.yaml";
    let crd = find(&objects, "CustomResourceDefinition", cluster_agent::rbac::CRD_NAME);
    let expected = serde_json::to_value(cluster_agent::crd::ManagedInstance::crd()).unwrap();
    assert!(
        numbers_as_floats(crd["spec"].clone()) == numbers_as_floats(expected["spec"].clone()),
        "the chart's CRD is not the agent's ManagedInstance; {regenerate}"
    );
    let (account, role, binding) = cluster_agent::rbac::manifests();
    let strip = |mut object: Value| {
        object["metadata"].as_object_mut().unwrap().remove("labels");
        object
    };
    for expected in [
        serde_json::to_value(&account).unwrap(),
        serde_json::to_value(&role).unwrap(),
        serde_json::to_value(&binding).unwrap(),
    ] {
        let kind = expected["kind"].as_str().unwrap().to_owned();
        let rendered = find(&objects, &kind, cluster_agent::rbac::NAME).clone();
        assert_eq!(
            strip(rendered),
            strip(expected),
            "the chart's {kind} differs from cluster_agent::rbac::manifests(); {regenerate}"
        );
    }
    // The agent runs as that service account, two replicas electing the converging one through a Lease
    // in their own namespace (`cluster_agent::leader`), rolled one at a time.
    let deployment = find(&objects, "Deployment", "cp-cluster-agent");
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], cluster_agent::rbac::NAME);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    let election =
        env.iter().find(|e| e["name"] == "CP_LEADER_ELECTION_NAMESPACE").expect("leader election on");
    assert_eq!(election["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
}

#[test]
fn the_charts_refuse_what_would_not_work() {
    let identities = Identities::new();
    let refused = |chart_name: &str, namespace: &str, set: &[&str], expected: &str| {
        let values = chart(chart_name).join("ci/default-values.yaml");
        let mut command = helm();
        command.args(["template", "x"]).arg(chart(chart_name)).args(chart_args(
            chart_name,
            &values,
            &identities,
        ));
        command.args(["--namespace", namespace]);
        for s in set {
            command.args(["--set", s]);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{set:?}: expected {expected:?}, got {stderr}"
        );
    };
    // More replicas than a cluster's agent needs: refused by the schema.
    refused("cluster-agent", AGENT_NAMESPACE, &["replicas=9"], "replicas");
    // The agent's RBAC binds its service account in cp-system.
    refused("cluster-agent", "default", &[], "install this chart into namespace cp-system");
    refused("control-plane", CONTROL_PLANE_NAMESPACE, &["api.commitMode=fast"], "commitMode");
    refused(
        "control-plane",
        CONTROL_PLANE_NAMESPACE,
        &["api.tokens.existingSecret="],
        "api.tokens.existingSecret",
    );
    refused(
        "control-plane",
        CONTROL_PLANE_NAMESPACE,
        &["identities.admin.existingSecret="],
        "identities.admin",
    );
    refused("control-plane", CONTROL_PLANE_NAMESPACE, &["nats.enabled=false"], "natsConnection.url");
}

/// The control plane's NetworkPolicies, judged by cyclonus's policy engine (`tests/netpol-eval`, built by
/// `./dev` into `.tools/netpol-eval-v0.5.6`) on the pods the chart's templates label: each component
/// reaches what it uses, and nothing else leaves.
#[test]
fn the_control_plane_s_network_policies_admit_what_each_component_uses_and_no_more() {
    let evaluator = tool(
        "CP_NETPOL_EVAL",
        ".tools/netpol-eval-v0.5.6/netpol-eval",
        "the NetworkPolicy evaluator (cyclonus, built by ./dev from the Go module proxy)",
    );
    let identities = Identities::new();
    let values = chart("control-plane").join("ci/default-values.yaml");
    let objects = objects(&template("control-plane", &values, &identities));
    // In the release's namespace, as the API server stores them (`helm template` leaves it out).
    let policies: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy")
        .map(|o| {
            let mut policy = o.clone();
            policy["metadata"]["namespace"] = Value::from(CONTROL_PLANE_NAMESPACE);
            policy
        })
        .collect();
    assert_eq!(policies.len(), 4);
    let labels =
        |kind: &str, name: &str| find(&objects, kind, name)["spec"]["template"]["metadata"]["labels"].clone();
    let pod = |name: &str, labels: Value, ip: &str| serde_json::json!({"namespace": "cp", "name": name, "labels": labels, "ip": ip});
    let pods = serde_json::json!([
        pod("api-0", labels("Deployment", "cp-api"), "10.0.0.1"),
        pod("projector-0", labels("Deployment", "cp-projector"), "10.0.0.2"),
        pod("migrate-0", labels("Job", "cp-migrate-1"), "10.0.0.3"),
        pod("nats-0", labels("StatefulSet", "cp-nats"), "10.0.0.4"),
        pod("nats-1", labels("StatefulSet", "cp-nats"), "10.0.0.5"),
        {"namespace": "kube-system", "name": "coredns-0", "labels": {"k8s-app": "kube-dns"}, "ip": "10.0.1.1"},
    ]);
    let namespaces = serde_json::json!([
        {"name": "cp", "labels": {"kubernetes.io/metadata.name": "cp"}},
        {"name": "kube-system", "labels": {"kubernetes.io/metadata.name": "kube-system"}},
    ]);
    let to_pod = |p: &str| serde_json::json!({"pod": format!("cp/{p}")});
    let ip = |a: &str| serde_json::json!({"ip": a});
    let dns = serde_json::json!({"pod": "kube-system/coredns-0"});
    // (from, to, port, port name, protocol, allowed)
    let cases = [
        (to_pod("api-0"), to_pod("nats-0"), 4222, "nats", "TCP", true),
        (to_pod("projector-0"), to_pod("nats-1"), 4222, "nats", "TCP", true),
        (to_pod("migrate-0"), to_pod("nats-0"), 4222, "nats", "TCP", true),
        (to_pod("nats-0"), to_pod("nats-1"), 6222, "cluster", "TCP", true),
        (to_pod("api-0"), dns.clone(), 53, "", "UDP", true),
        (to_pod("projector-0"), dns, 53, "", "TCP", true),
        // Clients from anywhere reach the API; agents from outside reach NATS' client port.
        (ip("203.0.113.7"), to_pod("api-0"), 8080, "http", "TCP", true),
        (ip("203.0.113.7"), to_pod("nats-0"), 4222, "nats", "TCP", true),
        // Not the routes between the NATS servers, from anyone else.
        (to_pod("api-0"), to_pod("nats-0"), 6222, "cluster", "TCP", false),
        (ip("203.0.113.7"), to_pod("nats-0"), 6222, "cluster", "TCP", false),
        // Nothing leaves for elsewhere: the metadata service, the internet, the API from the migration.
        (to_pod("api-0"), ip("169.254.169.254"), 80, "", "TCP", false),
        (to_pod("projector-0"), ip("198.51.100.1"), 443, "", "TCP", false),
        (to_pod("migrate-0"), to_pod("api-0"), 8080, "http", "TCP", false),
        (to_pod("nats-0"), ip("198.51.100.1"), 443, "", "TCP", false),
    ];
    let queries: Vec<Value> = cases
        .iter()
        .map(|(from, to, port, name, protocol, _)| {
            serde_json::json!({"from": from, "to": to, "port": port, "portName": name, "protocol": protocol})
        })
        .collect();
    let input =
        serde_json::json!({"policies": policies, "namespaces": namespaces, "pods": pods, "queries": queries});
    let mut child = Command::new(&evaluator)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "netpol-eval: {}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    for ((from, to, port, _, protocol, allowed), result) in
        cases.iter().zip(answer["results"].as_array().unwrap())
    {
        assert_eq!(result["allowed"].as_bool(), Some(*allowed), "{from} -> {to} {port}/{protocol}: {result}");
    }
}

/// kube-controller-manager with the Deployment and ReplicaSet controllers (upstream's, from the same
/// Go-built binary as the harness's), beside the harness's own; killed on drop.
struct Controllers(std::process::Child);

impl Controllers {
    fn start(plane: &ControlPlane, kubeconfig: &Path) -> Self {
        let bin = kubeenv::bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(plane.dir().join("deployment-controllers.log")).unwrap();
        let child = Command::new(bin.join("kube"))
            .args(["controller-manager", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--leader-elect=false", "--secure-port", "0"])
            .args(["--controllers", "deployment-controller,replicaset-controller,disruption-controller"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl` as the admin, failing the test with its output.
fn kubectl(plane: &ControlPlane, args: &[&str]) -> String {
    let output = run(plane.kubectl(Identity::Admin).args(args));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// Helm and kubectl block their thread; the harness's helpers (volume provisioner, …) run on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_charts_install_into_a_real_api_server_and_upgrade_through_the_migration_hook() {
    let identities = Identities::new();
    let mut plane = ControlPlane::start().await;
    let kubeconfig = plane.kubeconfig(Identity::Admin);
    // The harness runs the controllers the agent's objects need; Deployments need two more.
    let _deployments = Controllers::start(&plane, &kubeconfig);
    let helm_on = |args: &[&str]| {
        let mut command = helm();
        command.args(args).arg("--kubeconfig").arg(&kubeconfig);
        command
    };

    // The harness applied deploy/crds and deploy/rbac with kubectl; the chart owns them now.
    kubectl(
        &plane,
        &[
            "delete",
            "--wait",
            "clusterrolebinding/cp-cluster-agent",
            "clusterrole/cp-cluster-agent",
            &format!("customresourcedefinition/{}", cluster_agent::rbac::CRD_NAME),
        ],
    );
    kubectl(&plane, &["delete", "--wait", "-n", AGENT_NAMESPACE, "serviceaccount/cp-cluster-agent"]);

    // Secrets first, as the operator makes them (docs/operations.md, "Install").
    kubectl(&plane, &["create", "namespace", CONTROL_PLANE_NAMESPACE]);
    let seed = |file: &str| format!("--from-file={}={}", file, identities.seed(file).display());
    kubectl(
        &plane,
        &[
            "create",
            "secret",
            "generic",
            "cp-nats-control-plane",
            "-n",
            CONTROL_PLANE_NAMESPACE,
            &seed("control-plane.nk"),
        ],
    );
    kubectl(
        &plane,
        &["create", "secret", "generic", "cp-nats-admin", "-n", CONTROL_PLANE_NAMESPACE, &seed("admin.nk")],
    );
    kubectl(
        &plane,
        &[
            "create",
            "secret",
            "generic",
            "cp-api-tokens",
            "-n",
            CONTROL_PLANE_NAMESPACE,
            "--from-literal=tokens.json=[]",
        ],
    );
    kubectl(
        &plane,
        &[
            "create",
            "secret",
            "generic",
            "cp-agent-nats",
            "-n",
            AGENT_NAMESPACE,
            &format!("--from-file=nkey={}", identities.seed("agent-eu-1.nk").display()),
        ],
    );

    // Installed and waited for: every object accepted, every workload ready on kwok's node, the
    // migration Job complete, the NATS pods' claims bound.
    for chart_name in ["control-plane", "cluster-agent"] {
        let values = chart(chart_name).join("ci/default-values.yaml");
        let install = run(helm_on(&["install", release_of(chart_name)])
            .arg(chart(chart_name))
            .args(chart_args(chart_name, &values, &identities))
            .args(["--wait", "--timeout", "4m"]));
        let text = String::from_utf8_lossy(&install.stdout);
        assert!(text.contains("STATUS: deployed"), "{chart_name}: {text}\n{}", plane.diagnostics());
    }
    let ready = kubectl(
        &plane,
        &[
            "get",
            "deployments,statefulsets",
            "-n",
            CONTROL_PLANE_NAMESPACE,
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.status.readyReplicas}{\"\\n\"}{end}",
        ],
    );
    for line in ["Deployment/cp-api=2", "Deployment/cp-projector=2", "StatefulSet/cp-nats=3"] {
        assert!(ready.lines().any(|l| l == line), "expected {line} in\n{ready}");
    }
    let job = kubectl(
        &plane,
        &["get", "job/cp-migrate-1", "-n", CONTROL_PLANE_NAMESPACE, "-o", "jsonpath={.status.succeeded}"],
    );
    assert_eq!(job, "1", "the migration Job did not complete");
    let agent = kubectl(
        &plane,
        &[
            "get",
            "deployment/cp-cluster-agent",
            "-n",
            AGENT_NAMESPACE,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    );
    assert_eq!(agent, "2", "both agent replicas ready (one leads, one stands by)");
    // The agent's permissions as the API server holds them are the agent's code's.
    let role: Value =
        serde_json::from_str(&kubectl(&plane, &["get", "clusterrole/cp-cluster-agent", "-o", "json"]))
            .unwrap();
    assert_eq!(role["rules"], serde_json::to_value(cluster_agent::rbac::rules()).unwrap());

    // An upgrade runs `cp-api --migrate` as a pre-upgrade hook and waits for it before rolling anything.
    let values = chart("control-plane").join("ci/default-values.yaml");
    let upgrade = run(helm_on(&["upgrade", "cp"])
        .arg(chart("control-plane"))
        .args(chart_args("control-plane", &values, &identities))
        .args(["--set", "api.replicas=3", "--wait", "--timeout", "4m"]));
    let text = String::from_utf8_lossy(&upgrade.stdout);
    assert!(text.contains("STATUS: deployed") && text.contains("REVISION: 2"), "{text}");
    let hook = kubectl(
        &plane,
        &["get", "job/cp-migrate", "-n", CONTROL_PLANE_NAMESPACE, "-o", "jsonpath={.status.succeeded}"],
    );
    assert_eq!(hook, "1", "the pre-upgrade migration did not complete");
    let api = kubectl(
        &plane,
        &[
            "get",
            "deployment/cp-api",
            "-n",
            CONTROL_PLANE_NAMESPACE,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    );
    assert_eq!(api, "3");
}

//! A real Kubernetes control plane for the agent's tests and the local demo.
//!
//! `etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler` and `kwok`, built from their
//! upstream Go modules by `./dev` (see `tests/kube-control-plane/go.mod` for the pinned versions) into
//! `.tools/kube/bin`, started on loopback ports in a temporary directory and killed on drop. One fake
//! node managed by kwok makes scheduled pods Running/Ready without a kubelet; the real StatefulSet
//! controller, scheduler, garbage collector and persistent-volume binder do the rest.
//!
//! What has no upstream process here is played by test-side helpers ([`helpers`]): a volume
//! provisioner and resizer for the default StorageClass, and a stand-in for the CloudNativePG operator
//! that writes each `Cluster`'s status the way CloudNativePG documents it, whose backups and recoveries
//! are made by a real PostgreSQL and Barman's cloud tools ([`barman`]).
//!
//! Identities: `admin` (group `system:masters`) and the agent's service account
//! `system:serviceaccount:cp-system:cp-cluster-agent`, which has exactly the permissions of
//! `deploy/rbac/cluster-agent.yaml` (the API server runs with `--authorization-mode=RBAC`).

pub mod barman;
pub mod cnpg;
pub mod helpers;
pub mod load_balancer;
mod pki;
mod roles;

use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Node, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

/// How long a component may take to become ready (named so CI can be told what timed out).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Name of the fake node kwok manages.
pub const NODE: &str = "kwok-node-0";

/// Whom a kubeconfig or client authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `system:masters`: the test itself, the controller manager, the scheduler, kwok and the helpers
    Admin,
    /// the cluster agent's service account, bound to the ClusterRole of `deploy/rbac/`
    Agent,
}

impl Identity {
    fn file(self) -> &'static str {
        match self {
            Self::Admin => "admin.kubeconfig",
            Self::Agent => "agent.kubeconfig",
        }
    }
}

/// Where the Go-built binaries are: `$CP_KUBE_BIN_DIR`, else `.tools/kube/bin` of this checkout.
pub fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("CP_KUBE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/kube/bin"));
    for binary in ["etcd", "kube", "kwok"] {
        if !dir.join(binary).is_file() {
            return Err(format!(
                "{} not found: run `./dev test` or `./dev tools` (builds etcd, the Kubernetes control plane and \
                 kwok from their Go modules into .tools/kube/bin), or set CP_KUBE_BIN_DIR",
                dir.join(binary).display()
            ));
        }
    }
    Ok(dir)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Manifests installed into every control plane: CloudNativePG's `Cluster` and `Backup` CRDs and the
/// Barman Cloud plugin's `ObjectStore` CRD at the versions the agent targets (copied by `./dev` from the
/// upstream Go modules), the project's CRD and the agent's RBAC.
fn manifests() -> Vec<PathBuf> {
    let root = repo_root();
    let third_party = std::env::var_os("CP_KUBE_CRD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/kube/crds"));
    vec![
        third_party.join("postgresql.cnpg.io_clusters.yaml"),
        third_party.join("postgresql.cnpg.io_backups.yaml"),
        third_party.join("barmancloud.cnpg.io_objectstores.yaml"),
        root.join("deploy/crds/managedinstances.yaml"),
        root.join("tests/kube-control-plane/manifests.yaml"),
        root.join("deploy/rbac/cluster-agent.yaml"),
    ]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; everything is killed and its directory removed on drop.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    processes: Vec<Process>,
    helpers: Box<[tokio::task::JoinHandle<()>]>,
    postgres: std::sync::Arc<barman::Servers>,
    cnpg: std::sync::Arc<cnpg::Cnpg>,
    url: String,
    /// how long [`ControlPlane::start`] took until every component was ready
    pub startup: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("url", &self.url).field("dir", &self.dir.path()).finish()
    }
}

impl ControlPlane {
    /// Starts a control plane and waits until it is ready: API server healthy, CRDs established, the
    /// fake node Ready, the helpers running. Panics with the failing component's log otherwise.
    pub async fn start() -> Self {
        // The ports are picked free and released before the components bind them, so another test's
        // process can take one in between (seen in CI: "bind: address already in use"). Such a start is
        // retried on fresh ports; any other failure is reported at once.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start().await {
                Ok(plane) => return plane,
                Err(e) if attempt < ATTEMPTS && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(
                        attempt,
                        "a port was taken before the control plane bound it; retrying on fresh ports"
                    );
                }
                Err(e) => panic!("starting the Kubernetes control plane: {e:#}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn try_start() -> anyhow::Result<Self> {
        let begun = Instant::now();
        let bin = bin_dir().map_err(anyhow::Error::msg)?;
        let dir = tempfile::Builder::new().prefix("cp-kube-").tempdir()?;
        let pki = pki::Pki::generate()?;
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name);
        fs::write(path("ca.crt"), &pki.ca_pem)?;
        fs::write(path("apiserver.crt"), &pki.serving_cert_pem)?;
        fs::write(path("apiserver.key"), &pki.serving_key_pem)?;
        fs::write(path("service-account.key"), &pki.service_account_key_pem)?;
        fs::write(path("service-account.pub"), &pki.service_account_public_pem)?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let agent_token = uuid::Uuid::new_v4().simple().to_string();
        // Static tokens (token,user,uid,"groups"): the agent authenticates with the user name a service
        // account token would carry, so the ClusterRoleBinding to the service account applies to it.
        fs::write(
            path("tokens.csv"),
            format!(
                "{admin_token},admin,admin,\"system:masters\"\n\
                 {agent_token},system:serviceaccount:cp-system:cp-cluster-agent,agent,\"system:serviceaccounts,system:serviceaccounts:cp-system\"\n"
            ),
        )?;
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let url = format!("https://127.0.0.1:{api_port}");
        for (identity, token) in [(Identity::Admin, &admin_token), (Identity::Agent, &agent_token)] {
            fs::write(path(identity.file()), kubeconfig(&url, &path("ca.crt"), token))?;
        }
        let mut plane = Self {
            dir,
            bin,
            processes: Vec::new(),
            helpers: Box::default(),
            postgres: std::sync::Arc::new(barman::Servers::new()?),
            cnpg: std::sync::Arc::default(),
            url,
            startup: Duration::ZERO,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data = path("etcd");
        plane.spawn(
            "etcd",
            "etcd",
            &[
                "--data-dir",
                data.to_str().unwrap_or_default(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
                // test data: durability across a machine crash is not needed, speed is
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )?;
        let file = |name: &str| path(name).to_string_lossy().into_owned();
        plane.spawn(
            "kube-apiserver",
            "kube",
            &[
                "apiserver",
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                &api_port.to_string(),
                "--tls-cert-file",
                &file("apiserver.crt"),
                "--tls-private-key-file",
                &file("apiserver.key"),
                "--client-ca-file",
                &file("ca.crt"),
                "--token-auth-file",
                &file("tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                &file("service-account.pub"),
                "--service-account-signing-key-file",
                &file("service-account.key"),
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                // A loopback address cannot be the `kubernetes` service's endpoint; nothing here needs it.
                "--endpoint-reconciler-type",
                "none",
                // The node-lifecycle controller, which lifts the not-ready taint this plugin puts on new
                // nodes, is not run: kwok's node has no kubelet heartbeat for it to judge.
                "--disable-admission-plugins",
                "TaintNodesByCondition",
                // Pod Security admission is on by default; named so that no one turns it off unnoticed:
                // the agent's namespaces enforce a level (`cluster_agent::mirror::POD_SECURITY_LEVEL`),
                // and every scenario on this backend runs its pods under it.
                "--enable-admission-plugins",
                "PodSecurity",
            ],
        )?;
        let admin = plane.client(Identity::Admin).await?;
        plane.wait_ready(&admin).await?;
        let admin_kubeconfig = file(Identity::Admin.file());
        plane.spawn("kube-controller-manager", "kube", &[
            "controller-manager",
            "--kubeconfig", &admin_kubeconfig,
            "--leader-elect=false", "--secure-port", "0",
            // What the agent's objects need: StatefulSets make pods and claims, claims bind to volumes,
            // owners' deletions cascade, namespaces get their default service account, Jobs (a
            // credentials rotation) run a pod to completion.
            "--controllers", "statefulset-controller,job-controller,garbage-collector-controller,persistentvolume-binder-controller,\
                persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,namespace-controller,\
                serviceaccount-controller,serviceaccount-token-controller,persistentvolume-expander-controller",
            "--pvclaimbinder-sync-period", "1s",
            // Hundreds of instances at once (cluster-agent/tests/agent/leader.rs). At kube-controller-
            // manager's own client limits, 20 requests/s in bursts of 30 (k8s.io/kubernetes v1.36.1
            // pkg/controller/apis/config/v1alpha1/defaults.go), and five StatefulSets synced at a time
            // (pkg/controller/statefulset/config/v1alpha1/defaults.go), each sync of an OrderedReady set
            // creating at most one pod (stateful_set_control.go, processReplica), 200 instances took
            // ~45 s to become ready after the agent's takeover; with these, ~18 s.
            "--kube-api-qps", "200", "--kube-api-burst", "400",
            "--concurrent-statefulset-syncs", "20",
            "--service-account-private-key-file", &file("service-account.key"),
            "--root-ca-file", &file("ca.crt"),
        ])?;
        plane.spawn(
            "kube-scheduler",
            "kube",
            &["scheduler", "--kubeconfig", &admin_kubeconfig, "--leader-elect=false", "--secure-port", "0"],
        )?;
        let stages = repo_root().join("tests/kube-control-plane/kwok-stages.yaml");
        plane.spawn(
            "kwok",
            "kwok",
            &[
                "--kubeconfig",
                &admin_kubeconfig,
                "--manage-nodes-with-annotation-selector",
                "kwok.x-k8s.io/node=fake",
                "--config",
                stages.to_str().unwrap_or_default(),
                "--server-address",
                "",
                "--node-lease-duration-seconds",
                "0",
            ],
        )?;
        plane.install_manifests()?;
        plane.wait_crds_established(&admin).await?;
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {"type": "kwok"}},
        }))?;
        Api::<Node>::all(admin.clone()).create(&PostParams::default(), &node).await?;
        plane.helpers =
            helpers::spawn_all(admin.clone(), plane.postgres.clone(), plane.cnpg.clone()).into_boxed_slice();
        plane.wait_node_ready(&admin).await?;
        plane.startup = begun.elapsed();
        tracing::info!(url = %plane.url, startup = ?plane.startup, "Kubernetes control plane ready");
        Ok(plane)
    }

    fn spawn(&mut self, name: &'static str, binary: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let child = Command::new(self.bin.join(binary))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name} ({}): {e}", self.bin.join(binary).display()))?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    /// Fails at once when a component has exited: waiting longer would not help.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if self.processes.iter_mut().any(|p| p.child.try_wait().ok().flatten().is_some()) {
            anyhow::bail!("a component exited\n{}", self.diagnostics());
        }
        Ok(())
    }

    /// The last lines each component logged, and which have exited: for failure messages.
    pub fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for process in &mut self.processes {
            let exited = process.child.try_wait().ok().flatten();
            out.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                process.name,
                exited.map(|s| format!("exited: {s}")).unwrap_or_else(|| "running".into()),
                tail(&process.log, 1500)
            ));
        }
        out
    }

    /// Polls `/readyz`: before the API server serves there is nothing to watch, and readiness (its
    /// post-start hooks) has no event of its own.
    async fn wait_ready(&mut self, admin: &Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if admin.request_text(request).await.is_ok_and(|body| body.trim() == "ok") {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                anyhow::bail!("kube-apiserver not ready after {START_TIMEOUT:?}\n{}", self.diagnostics());
            }
            // Nothing can be watched before the server serves: probing `/readyz` (bounded, and checking
            // that the process still runs) is the only signal a starting kube-apiserver gives.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_node_ready(&mut self, admin: &Client) -> anyhow::Result<()> {
        let ready = |node: Option<&Node>| {
            node.and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let waited = kube::runtime::wait::await_condition(Api::<Node>::all(admin.clone()), NODE, ready);
        match tokio::time::timeout(START_TIMEOUT, waited).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => anyhow::bail!("watching node {NODE}: {e}\n{}", self.diagnostics()),
            Err(_) => {
                anyhow::bail!(
                    "kwok did not make node {NODE} Ready after {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                )
            }
        }
    }

    fn install_manifests(&mut self) -> anyhow::Result<()> {
        let mut args = vec!["apply".to_owned(), "--server-side".to_owned()];
        for file in manifests() {
            anyhow::ensure!(
                file.is_file(),
                "{} missing: `./dev tools` copies CloudNativePG's CRD from its Go module",
                file.display()
            );
            args.extend(["-f".to_owned(), file.to_string_lossy().into_owned()]);
        }
        self.kubectl_checked(&args)?;
        Ok(())
    }

    /// Waits (watching, bounded) until every installed CRD is Established. Not `kubectl wait
    /// --for=condition=Established crd --all`: on a CRD whose status has no conditions yet it fails at
    /// once ("status.conditions accessor error") instead of waiting.
    async fn wait_crds_established(&mut self, admin: &Client) -> anyhow::Result<()> {
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        for crd in crds.list(&Default::default()).await? {
            let name = crd.name_any();
            let established = kube::runtime::wait::await_condition(
                crds.clone(),
                &name,
                kube::runtime::wait::conditions::is_crd_established(),
            );
            match tokio::time::timeout(START_TIMEOUT, established).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("watching CRD {name}: {e}\n{}", self.diagnostics()),
                Err(_) => anyhow::bail!(
                    "CRD {name} not Established after {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                ),
            }
        }
        Ok(())
    }

    fn kubectl_checked<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S]) -> anyhow::Result<String> {
        let output = self.kubectl(Identity::Admin).args(args).output()?;
        if !output.status.success() {
            anyhow::bail!(
                "kubectl {:?} failed: {}\n{}",
                args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>(),
                String::from_utf8_lossy(&output.stderr),
                self.diagnostics()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Path of a kubeconfig for `identity`.
    pub fn kubeconfig(&self, identity: Identity) -> PathBuf {
        self.dir.path().join(identity.file())
    }

    /// Client configuration for `identity`.
    pub async fn config(&self, identity: Identity) -> anyhow::Result<kube::Config> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig(identity))?;
        Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A client for `identity`.
    pub async fn client(&self, identity: Identity) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.config(identity).await?)?)
    }

    /// `kubectl` (upstream's, built into the same binary) with `identity`'s kubeconfig.
    pub fn kubectl(&self, identity: Identity) -> Command {
        let mut command = Command::new(self.bin.join("kube"));
        command.arg("kubectl").arg("--kubeconfig").arg(self.kubeconfig(identity));
        command
    }

    /// The real PostgreSQL servers that play each CloudNativePG Cluster (started when a backup, a recovery
    /// or a test needs one).
    pub fn postgres(&self) -> &std::sync::Arc<barman::Servers> {
        &self.postgres
    }

    /// The CloudNativePG operator's stand-in ([`cnpg`]), to hold a Cluster's processing.
    pub fn cnpg(&self) -> &std::sync::Arc<cnpg::Cnpg> {
        &self.cnpg
    }

    /// The control plane's directory (logs, kubeconfigs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for helper in &self.helpers {
            helper.abort();
        }
        self.postgres.stop_all();
        // Clients first, etcd last.
        for process in self.processes.iter_mut().rev() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if std::env::var_os("CP_KUBE_KEEP").is_some() {
            eprintln!("control plane directory kept: {}", self.dir.path().display());
            self.dir.disable_cleanup(true);
        }
    }
}

fn kubeconfig(url: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {url}\n    certificate-authority: {}\n\
         users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: user\n\
         current-context: local\n",
        ca.display()
    )
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else { return String::new() };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(bytes)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}

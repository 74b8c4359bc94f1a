//! Plays CloudNativePG's instance manager and its Barman Cloud plugin with the real programs: each
//! `Cluster` whose WAL archiver is an `ObjectStore` gets a real PostgreSQL of the Cluster's major that
//! archives its WAL with `barman-cloud-wal-archive`; a `Backup` (`method: plugin`) is `barman-cloud-backup`;
//! a Cluster bootstrapped by `recovery` from a plugin external cluster is `barman-cloud-restore` of the
//! named base backup, then WAL replay with `barman-cloud-wal-restore` to its target. So the base backups and
//! WAL in the store are Barman's own, in Barman's layout, and a fork's rows are what PostgreSQL recovered.
//!
//! Upstream, as encoded here (every fact with where it is written):
//! - Barman: PyPI `barman[cloud]` 3.19.1, the version the plugin's sidecar image installs
//!   (github.com/cloudnative-pg/plugin-barman-cloud v0.14.0 `containers/sidecar-requirements.in`); `./dev`
//!   installs it into `.tools/barman-3.19.1` with a Python the `postgres` user can run.
//! - The arguments: github.com/cloudnative-pg/barman-cloud at the commit plugin v0.14.0's `go.mod` pins
//!   (950b0f57e122): `pkg/backup/backup.go` `GetBarmanCloudBackupOptions` (`--user postgres --name <name>`,
//!   `--endpoint-url`, then `--cloud-provider aws-s3` from `pkg/command/commandbuilder.go`
//!   `appendCloudProviderOptions`, then `<destinationPath> <serverName>`); `pkg/archiver/command.go` (the
//!   same for `barman-cloud-wal-archive`, then the WAL file); `CloudWalRestoreOptions` for
//!   `barman-cloud-wal-restore`. The backup's name is `backup-<compact ISO 8601 time>` and what the
//!   `Backup`'s status reports (`backupId`, `backupName`, `beginWal`, `endWal`, `startedAt`, `stoppedAt`)
//!   is read back from Barman's catalogue by that name (`barman-cloud-backup-list --format json`):
//!   plugin v0.14.0 `internal/cnpgi/instance/backup.go`, barman-cloud `pkg/command/backuplist.go`.
//! - The server name is the Cluster's name unless the plugin's `serverName` parameter says otherwise
//!   (plugin v0.14.0 `internal/cnpgi/operator/config/config.go`, `serverName := cluster.Name`); a recovery
//!   source's likewise from the external cluster's plugin parameters.
//! - What differs from a real cluster: one PostgreSQL per Cluster whatever `instances` says; it listens on
//!   a Unix socket in its own directory; `pg_switch_wal()` is called before a base backup only by Barman
//!   itself (`pg_backup_stop` waits for the WAL to be archived).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
};
use serde_json::Value;

mod major_upgrade;

/// The Barman version the Barman Cloud plugin's sidecar installs (plugin-barman-cloud v0.14.0
/// `containers/sidecar-requirements.in`).
pub const BARMAN_VERSION: &str = "3.19.1";

/// Where Barman's cloud tools are: `$CP_BARMAN_BIN_DIR`, else `.tools/barman-<version>/bin`.
pub fn barman_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("CP_BARMAN_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(format!(".tools/barman-{BARMAN_VERSION}/bin")));
    if !dir.join("barman-cloud-backup").is_file() {
        return Err(format!(
            "{} not found: run `./dev test` or `./dev tools` (installs PyPI barman[cloud]=={BARMAN_VERSION}), or set \
             CP_BARMAN_BIN_DIR",
            dir.join("barman-cloud-backup").display()
        ));
    }
    Ok(dir)
}

/// Where PostgreSQL `major`'s server programs are: `$CP_POSTGRES_<major>_BIN_DIR`, else Debian's
/// `/usr/lib/postgresql/<major>/bin` (package `postgresql-<major>`).
pub fn postgres_dir(major: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os(format!("CP_POSTGRES_{major}_BIN_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    if !dir.join("postgres").is_file() {
        return Err(format!(
            "no PostgreSQL {major} here ({} not found): install Debian's postgresql-{major}, or set \
             CP_POSTGRES_{major}_BIN_DIR",
            dir.join("postgres").display()
        ));
    }
    Ok(dir)
}

/// The major version a CloudNativePG `imageName` runs (`ghcr.io/cloudnative-pg/postgresql:16` → `16`).
pub fn major_of_image(image: &str) -> Option<String> {
    let tag = image.rsplit_once(':')?.1;
    let major = tag.split(['.', '-']).next()?;
    major.chars().all(|c| c.is_ascii_digit()).then(|| major.to_owned())
}

/// Where a Cluster archives to, or recovers from: an `ObjectStore`'s configuration with its keys.
#[derive(Clone)]
pub struct Destination {
    /// `s3://<bucket>/<path>`
    pub path: String,
    /// the S3 endpoint
    pub endpoint: String,
    /// Barman's server name under the path
    pub server: String,
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination").field("path", &self.path).field("server", &self.server).finish()
    }
}

impl Destination {
    /// The arguments the plugin gives every Barman cloud command before its own (barman-cloud
    /// `pkg/command/commandbuilder.go`): the endpoint and the provider, then the path and server name.
    fn args(&self) -> Vec<String> {
        vec![
            "--endpoint-url".into(),
            self.endpoint.clone(),
            "--cloud-provider".into(),
            "aws-s3".into(),
            self.path.clone(),
            self.server.clone(),
        ]
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_access_key.clone()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Runs a Barman cloud tool against this destination: `before` its arguments, `after` them.
    pub fn barman(&self, tool: &str, before: &[&str], after: &[&str]) -> anyhow::Result<String> {
        let dir = barman_dir().map_err(anyhow::Error::msg)?;
        let mut args: Vec<String> = before.iter().map(|s| (*s).to_owned()).collect();
        args.extend(self.args());
        args.extend(after.iter().map(|s| (*s).to_owned()));
        run_as_postgres(&dir.join(tool), &args, &self.env())
    }

    /// Barman's own catalogue of this server's base backups (`barman-cloud-backup-list --format json`).
    pub fn catalogue(&self) -> anyhow::Result<Vec<Value>> {
        let listed: Value =
            serde_json::from_str(&self.barman("barman-cloud-backup-list", &["--format", "json"], &[])?)?;
        Ok(listed["backups_list"].as_array().cloned().unwrap_or_default())
    }
}

/// Whether this process runs as root (PostgreSQL refuses to; it then runs as the `postgres` user).
fn root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs `program` as the `postgres` user when this process is root, with `env` added; its stdout.
fn run_as_postgres(program: &Path, args: &[String], env: &[(String, String)]) -> anyhow::Result<String> {
    run_as_postgres_in(None, program, args, env)
}

/// [`run_as_postgres`] in the working directory `dir`, if given.
fn run_as_postgres_in(
    dir: Option<&Path>,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> anyhow::Result<String> {
    let mut command = if root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "env"]);
        command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        command.arg(program);
        command
    } else {
        let mut command = Command::new(program);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command
    };
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.args(args).output().with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One Cluster's PostgreSQL: a data directory, a socket directory, its own WAL archive.
pub struct Server {
    dir: PathBuf,
    bin: PathBuf,
    /// its major version
    pub major: String,
    /// where it archives its WAL and its base backups go
    pub destination: Destination,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("dir", &self.dir).field("major", &self.major).finish()
    }
}

impl Server {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs SQL as the `postgres` superuser; its rows, one per line, fields separated by `|`.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let args: Vec<String> =
            ["-h", &self.dir.display().to_string(), "-U", "postgres", "-d", "postgres", "-XAtc", sql]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        run_as_postgres(&self.bin.join("psql"), &args, &[])
    }

    /// `barman-cloud-backup` of this server, named `name` as the plugin names it; Barman's record of it.
    fn base_backup(&self, name: &str) -> anyhow::Result<Value> {
        let host = self.dir.display().to_string();
        self.destination.barman(
            "barman-cloud-backup",
            &["--user", "postgres", "--host", &host, "--name", name],
            &[],
        )?;
        self.destination
            .catalogue()?
            .into_iter()
            .find(|b| b["backup_name"] == name)
            .with_context(|| format!("Barman's catalogue has no backup named {name}"))
    }

    fn start(&self) -> anyhow::Result<()> {
        let args: Vec<String> = [
            "-D",
            &self.data().display().to_string(),
            "-l",
            &self.dir.join("log").display().to_string(),
            "-w",
            "-t",
            "120",
            "start",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        run_as_postgres(&self.bin.join("pg_ctl"), &args, &self.destination.env()).map(|_| ()).with_context(
            || format!("its log: {}", std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()),
        )
    }

    /// The settings every server gets: its socket, and WAL archived as the plugin archives it.
    fn configure(&self, extra: &str) -> anyhow::Result<()> {
        let barman = barman_dir().map_err(anyhow::Error::msg)?;
        let archive = std::iter::once(barman.join("barman-cloud-wal-archive").display().to_string())
            .chain(self.destination.args())
            .chain(std::iter::once("%p".to_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let settings = format!(
            "\n# kubeenv::barman\nlisten_addresses = ''\nunix_socket_directories = '{dir}'\nport = 5432\n\
             wal_level = replica\narchive_mode = on\narchive_command = '{archive}'\n{extra}",
            dir = self.dir.display()
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&settings);
        std::fs::write(&conf, text)?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let args: Vec<String> = ["-D", &self.data().display().to_string(), "-m", "immediate", "stop"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let _ = run_as_postgres(&self.bin.join("pg_ctl"), &args, &[]);
    }
}

/// Every Cluster's PostgreSQL, by (namespace, name); each stopped on drop.
pub struct Servers {
    root: tempfile::TempDir,
    servers: Mutex<HashMap<(String, String), Arc<Server>>>,
    failures: Mutex<HashMap<(String, String), String>>,
    starting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servers").field("root", &self.root.path()).finish_non_exhaustive()
    }
}

impl Servers {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let root = tempfile::Builder::new().prefix("cp-postgres-").tempdir()?;
        // The `postgres` user walks into it.
        std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self {
            root,
            servers: Mutex::default(),
            failures: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
        })
    }

    /// The Cluster's server, if it runs.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Server>> {
        self.servers.lock().expect("servers lock").get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Stops every server (the control plane is going away).
    pub(crate) fn stop_all(&self) {
        let servers: Vec<_> = self.servers.lock().expect("servers lock").drain().collect();
        drop(servers);
    }

    /// Why the Cluster's server could not start, if it could not.
    pub fn failure(&self, namespace: &str, name: &str) -> Option<String> {
        self.failures.lock().expect("failures lock").get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    pub(crate) fn note_failure(&self, namespace: &str, name: &str, why: String) {
        self.failures.lock().expect("failures lock").insert((namespace.to_owned(), name.to_owned()), why);
    }

    /// The Cluster's server, started (initialised, or recovered as its bootstrap says) if it does not run.
    pub async fn ensure(&self, admin: &Client, namespace: &str, name: &str) -> anyhow::Result<Arc<Server>> {
        let _one_at_a_time = self.starting.lock().await;
        if let Some(server) = self.get(namespace, name) {
            return Ok(server);
        }
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), namespace, &crate::helpers::cnpg_cluster_resource());
        let cluster = serde_json::to_value(clusters.get(name).await?)?;
        let major = cluster["spec"]["imageName"]
            .as_str()
            .and_then(major_of_image)
            .context("the Cluster names no image with a major version")?;
        let bin = postgres_dir(&major).map_err(anyhow::Error::msg)?;
        let destination = archive_destination(admin, namespace, &cluster).await?;
        let dir = self.root.path().join(format!("{namespace}.{name}"));
        std::fs::create_dir_all(&dir)?;
        let server = Arc::new(Server { dir, bin, major, destination });
        let recovery = &cluster["spec"]["bootstrap"]["recovery"];
        if recovery.is_null() {
            let server = server.clone();
            blocking(move || {
                chown(&server.dir)?;
                let data = server.data().display().to_string();
                let args = strings(&["-D", &data, "-U", "postgres", "--auth=trust"]);
                run_as_postgres(&server.bin.join("initdb"), &args, &[])?;
                server.configure("")
            })
            .await?;
        } else {
            let origin = origin(admin, namespace, &cluster).await?;
            let target = recovery["recoveryTarget"].clone();
            let server = server.clone();
            blocking(move || recover(&server, &origin, &target)).await?;
        }
        let started = server.clone();
        blocking(move || started.start()).await?;
        self.servers
            .lock()
            .expect("servers lock")
            .insert((namespace.to_owned(), name.to_owned()), server.clone());
        Ok(server)
    }

    /// Takes the base backup `backup` (a CloudNativePG `Backup`) asks for; the status CloudNativePG
    /// reports for it (v1.30.0 `api/v1/backup_types.go`, `BackupStatus`), from Barman's record.
    pub(crate) async fn take(
        &self,
        admin: &Client,
        namespace: &str,
        backup: &Value,
    ) -> anyhow::Result<Value> {
        let cluster = backup["spec"]["cluster"]["name"].as_str().context("no cluster")?;
        let server = self.ensure(admin, namespace, cluster).await?;
        // Plugin v0.14.0 `internal/cnpgi/instance/backup.go`: `backup-<compact ISO 8601 time>`.
        let name = format!("backup-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
        let taken = server.clone();
        let record = blocking(move || taken.base_backup(&name)).await?;
        let time = |field: &str| -> Value {
            record[field]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .map_or(Value::Null, Value::String)
        };
        Ok(serde_json::json!({
            "phase": "completed", "method": "plugin",
            "serverName": server.destination.server, "destinationPath": server.destination.path,
            "backupId": record["backup_id"], "backupName": record["backup_name"],
            "beginWal": record["begin_wal"], "endWal": record["end_wal"],
            "startedAt": time("begin_time_iso"), "stoppedAt": time("end_time_iso"),
        }))
    }
}

/// Where the Cluster archives: its WAL archiver plugin's `ObjectStore`, under the plugin's `serverName`
/// (default: the Cluster's name; plugin v0.14.0 `internal/cnpgi/operator/config/config.go`).
async fn archive_destination(
    admin: &Client,
    namespace: &str,
    cluster: &Value,
) -> anyhow::Result<Destination> {
    let plugin = cluster["spec"]["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["isWALArchiver"] == true))
        .context("the Cluster has no WAL archiver")?;
    let store = plugin["parameters"]["barmanObjectName"].as_str().context("no barmanObjectName")?;
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let server_name = plugin["parameters"]["serverName"].as_str().unwrap_or(name);
    destination(admin, namespace, store, server_name).await
}

/// The external cluster a recovering Cluster's bootstrap names: its `ObjectStore` and server name.
async fn origin(admin: &Client, namespace: &str, cluster: &Value) -> anyhow::Result<Destination> {
    let source = cluster["spec"]["bootstrap"]["recovery"]["source"].as_str().context("no recovery source")?;
    let external = cluster["spec"]["externalClusters"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == source))
        .context("the recovery source is no external cluster")?;
    let parameters = &external["plugin"]["parameters"];
    let store = parameters["barmanObjectName"].as_str().context("no barmanObjectName")?;
    // Plugin v0.14.0 `internal/cnpgi/operator/config/config.go`: the recovery server name defaults to
    // the Cluster's own name.
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    destination(admin, namespace, store, parameters["serverName"].as_str().unwrap_or(name)).await
}

/// CloudNativePG's recovery bootstrap through the plugin: the base backup `recoveryTarget.backupID` of
/// `origin` restored with `barman-cloud-restore`, then WAL replayed with `barman-cloud-wal-restore` to
/// `targetTime` (or only to consistency: `targetImmediate`), then promoted (CloudNativePG v1.30.0
/// `docs/src/recovery.md`, "Point in time recovery (PITR)"; `recovery_target_action = promote`).
fn recover(server: &Server, origin: &Destination, target: &Value) -> anyhow::Result<()> {
    let backup = target["backupID"].as_str().context("no recoveryTarget.backupID")?;
    chown(&server.dir)?;
    let data = server.data().display().to_string();
    origin.barman("barman-cloud-restore", &[], &[backup, &data])?;
    std::fs::set_permissions(server.data(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let barman = barman_dir().map_err(anyhow::Error::msg)?;
    let restore = std::iter::once(barman.join("barman-cloud-wal-restore").display().to_string())
        .chain(origin.args())
        .chain(["%f".to_owned(), "%p".to_owned()])
        .collect::<Vec<_>>()
        .join(" ");
    // CloudNativePG v1.30.0 `api/v1/cluster_funcs.go` (`RecoveryTarget.BuildPostgresOptions`): the time in
    // PostgreSQL's format (cloudnative-pg/machinery v0.5.0 `pkg/postgres/time/time.go`,
    // `ConvertToPostgresFormat`: `2006-01-02 15:04:05.000000` and `+00:00`, never `Z`, which PostgreSQL
    // refuses here), `recovery_target = 'immediate'` for `targetImmediate`, inclusive unless `exclusive`.
    let target = match target["targetTime"].as_str() {
        Some(at) => {
            let at = chrono::DateTime::parse_from_rfc3339(at).context("targetTime is not RFC 3339")?;
            let at = at.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S%.6f+00:00");
            format!("recovery_target_time = '{at}'\nrecovery_target_inclusive = 'true'")
        }
        None => "recovery_target = 'immediate'\nrecovery_target_inclusive = 'true'".to_owned(),
    };
    // The restored configuration is the origin's, its archiving included; ours is appended and wins.
    server.configure(&format!(
        "restore_command = '{restore}'\n{target}\nrecovery_target_action = 'promote'\n"
    ))?;
    std::fs::write(server.data().join("recovery.signal"), "")?;
    chown(&server.dir)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn chown(dir: &Path) -> anyhow::Result<()> {
    if root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status()?;
        if !status.success() {
            bail!("chown of {} failed", dir.display());
        }
    }
    Ok(())
}

/// An `ObjectStore`'s destination, with the keys of the Secret it names, once both exist: the agent may
/// apply a Cluster before the `ObjectStore` and Secret it names, and CloudNativePG then waits for them too
/// (bounded here: a minute).
pub async fn destination(
    admin: &Client,
    namespace: &str,
    store: &str,
    server: &str,
) -> anyhow::Result<Destination> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match read_destination(admin, namespace, store, server).await {
            Ok(destination) => return Ok(destination),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "ObjectStore {namespace}/{store} and its keys not there within a minute"
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// An `ObjectStore`'s destination, with the keys of the Secret it names (barmancloud.cnpg.io/v1
/// `spec.configuration`: `destinationPath`, `endpointURL`, `s3Credentials.{accessKeyId,secretAccessKey}`).
async fn read_destination(
    admin: &Client,
    namespace: &str,
    store: &str,
    server: &str,
) -> anyhow::Result<Destination> {
    let resource = ApiResource {
        group: "barmancloud.cnpg.io".into(),
        version: "v1".into(),
        api_version: "barmancloud.cnpg.io/v1".into(),
        kind: "ObjectStore".into(),
        plural: "objectstores".into(),
    };
    let stores: Api<DynamicObject> = Api::namespaced_with(admin.clone(), namespace, &resource);
    let configuration = serde_json::to_value(stores.get(store).await?)?["spec"]["configuration"].clone();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), namespace);
    let key = async |field: &str| -> anyhow::Result<String> {
        let reference = &configuration["s3Credentials"][field];
        let secret = secrets.get(reference["name"].as_str().unwrap_or_default()).await?;
        let data = secret.data.unwrap_or_default();
        let value = data.get(reference["key"].as_str().unwrap_or_default()).context("no such key")?;
        Ok(String::from_utf8(value.0.clone())?)
    };
    Ok(Destination {
        path: configuration["destinationPath"].as_str().context("no destinationPath")?.to_owned(),
        endpoint: configuration["endpointURL"].as_str().context("no endpointURL")?.to_owned(),
        server: server.to_owned(),
        access_key_id: key("accessKeyId").await?,
        secret_access_key: key("secretAccessKey").await?,
    })
}

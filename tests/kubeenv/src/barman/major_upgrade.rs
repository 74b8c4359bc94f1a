//! CloudNativePG's offline in-place major upgrade, played with the real programs: when a running
//! Cluster's `imageName` names another major, its PostgreSQL is shut down, a new data directory is made by
//! the new major's `initdb`, `pg_upgrade --link` moves the data into it, and the server starts again on
//! the new major — archiving under whatever `serverName` the Cluster's plugin names now.
//!
//! Upstream, as encoded here:
//! - The procedure: CloudNativePG v1.30.0 `docs/src/postgres_upgrades.md`, "Upgrade Process" (shut down,
//!   a Job that `initdb`s new directories and runs `pg_upgrade` with `--link`, then starts the primary).
//! - The Job's commands: `internal/cmd/manager/instance/upgrade/execute/cmd.go` — `runInitDB`
//!   (`initdb --username postgres -D <new>`) and `runPgUpgrade` (`pg_upgrade --link --old-bindir
//!   --old-datadir --new-datadir`, run in the new data directory); the new `initdb` takes the old
//!   cluster's data checksum setting from its `pg_controldata` (cloudnative-pg PR #7274, "consider previous
//!   controldata when creating the new datadir", which closed #7276/#7363 where `pg_upgrade` refused
//!   clusters whose checksum settings differed). PostgreSQL 18's `initdb` turns checksums on by default
//!   (postgres commit 04bec894a04c), so an old cluster without them needs `--no-data-checksums`.
//! - The archive: the same document, "Manual archive path separation with the Barman Cloud plugin": the
//!   plugin does not separate archives by itself, so `serverName` changes with the image; the new system
//!   (a new system identifier, timeline 1) then archives beside the old major's backups and WAL, which stay.
//!
//! What differs from a real cluster: the old data directory is kept rather than removed, and the new one
//! lives beside it (CloudNativePG moves it in place).

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use serde_json::Value;

use super::{
    Server, Servers, archive_destination, blocking, chown, major_of_image, postgres_dir, run_as_postgres,
    run_as_postgres_in, strings,
};

impl Servers {
    /// Upgrades the running server of `cluster` when the Cluster's image names another major; whether it
    /// did. A Cluster whose server does not run yet has nothing to upgrade (it starts on its major).
    pub(crate) async fn follow_major(&self, admin: &Client, cluster: &Value) -> anyhow::Result<bool> {
        let namespace = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
        let _one_at_a_time = self.starting.lock().await;
        let Some(old) = self.get(namespace, name) else { return Ok(false) };
        let major = cluster["spec"]["imageName"]
            .as_str()
            .and_then(major_of_image)
            .context("the Cluster names no image with a major version")?;
        if major == old.major {
            return Ok(false);
        }
        let bin = postgres_dir(&major).map_err(anyhow::Error::msg)?;
        let destination = archive_destination(admin, namespace, cluster).await?;
        let dir = self.root.path().join(format!("{namespace}.{name}.pg{major}"));
        std::fs::create_dir_all(&dir)?;
        let new = Arc::new(Server { dir, bin, major, destination });
        let key = (namespace.to_owned(), name.to_owned());
        self.servers.lock().expect("servers lock").remove(&key);
        let (from, to) = (old.clone(), new.clone());
        blocking(move || upgrade(&from, &to)).await?;
        let started = new.clone();
        blocking(move || started.start()).await?;
        self.servers.lock().expect("servers lock").insert(key, new);
        Ok(true)
    }
}

/// Shuts `old` down cleanly (`pg_upgrade` refuses a cluster that was not), makes `new`'s data directory
/// with the old one's checksum setting, and runs `pg_upgrade --link` into it; then configures `new`'s
/// socket and archiving.
fn upgrade(old: &Server, new: &Server) -> anyhow::Result<()> {
    let old_data = old.data().display().to_string();
    run_as_postgres(&old.bin.join("pg_ctl"), &strings(&["-D", &old_data, "-m", "fast", "-w", "stop"]), &[])
        .context("stopping the old major")?;
    let control = run_as_postgres(&old.bin.join("pg_controldata"), &strings(&["-D", &old_data]), &[])?;
    let checksums = control
        .lines()
        .find_map(|line| line.strip_prefix("Data page checksum version:"))
        .map(str::trim)
        .context("pg_controldata names no data page checksum version")?
        != "0";
    chown(&new.dir)?;
    let new_data = new.data().display().to_string();
    let mut initdb = strings(&["--username", "postgres", "-D", &new_data, "--auth=trust"]);
    let major: u32 = new.major.parse().context("a numeric major")?;
    if checksums {
        initdb.push("--data-checksums".into());
    } else if major >= 18 {
        initdb.push("--no-data-checksums".into());
    }
    run_as_postgres(&new.bin.join("initdb"), &initdb, &[])?;
    let upgrade = strings(&[
        "--link",
        "--old-bindir",
        &old.bin.display().to_string(),
        "--old-datadir",
        &old_data,
        "--new-datadir",
        &new_data,
    ]);
    run_as_postgres_in(Some(&new.data()), &new.bin.join("pg_upgrade"), &upgrade, &[])
        .context("pg_upgrade")?;
    new.configure("")
}

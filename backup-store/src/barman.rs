//! What Barman's own catalogue says of a PostgreSQL base backup in the store, so that the control plane
//! checks a cluster's report against Barman rather than against a listing of the same objects the agent
//! summed up to report the size (which could not fail).
//!
//! Upstream, Barman 3.19.1 (the version the Barman Cloud plugin v0.14.0's sidecar installs):
//! - `barman/cloud.py`, `CloudBackupCatalog`: a base backup is `<server>/base/<backup_id>/` with its
//!   metadata in `backup.info`; WAL is archived under `<server>/wals/<first 16 hex digits of the
//!   segment>/<segment>[.<compression>]`.
//! - `barman/infofile.py`, `FieldListFile.save`: `backup.info` is one `key=value` line per field
//!   (`status`, `begin_wal`, `end_wal`, …; `None` for unset), `BackupInfo.DONE` is `DONE`; the id is the
//!   directory's name.
//! - A base backup is consistent only with the WAL from `begin_wal` to `end_wal` (PostgreSQL 15 docs,
//!   "Making a Base Backup Using the Low Level API": the WAL generated during the backup is needed to
//!   start it).

use std::collections::HashMap;

use crate::{StoreError, StoredObject};

/// A `backup.info`'s fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupInfo {
    fields: HashMap<String, String>,
}

impl BackupInfo {
    /// Parses `key=value` lines; others are ignored.
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self { fields }
    }

    /// A field, unless unset (`None` in Barman's files).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str).filter(|v| *v != "None" && !v.is_empty())
    }
}

/// The WAL segments from `begin` to `end` (24 hex digits each: timeline, log, segment; 16 MiB segments,
/// Barman's and PostgreSQL's default, 256 per log), in order; `None` when they are not segment names or
/// `end` is before `begin` or on another timeline.
pub fn segments(begin: &str, end: &str) -> Option<Vec<String>> {
    let parse = |name: &str| -> Option<(u32, u64)> {
        if name.len() != 24 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let segment = u64::from_str_radix(&name[16..], 16).ok()?;
        Some((timeline, log * 256 + segment))
    };
    let ((timeline, first), (end_timeline, last)) = (parse(begin)?, parse(end)?);
    if timeline != end_timeline || last < first || last - first > 100_000 {
        return None;
    }
    Some((first..=last).map(|n| format!("{timeline:08X}{:08X}{:08X}", n / 256, n % 256)).collect())
}

/// Why `info` (of backup `id`, under `server_prefix` = `<project>/<instance-id>/<server>`) does not back
/// a completed base backup, or `None` when it does; `list` lists the store under a prefix.
pub(crate) async fn check<F, Fut>(
    info: &BackupInfo,
    id: &str,
    server_prefix: &str,
    list: F,
) -> Result<Option<String>, StoreError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<StoredObject>, StoreError>>,
{
    // Barman's cloud catalogue takes a backup's id from its directory (`<server>/base/<id>/backup.info`),
    // and the file it uploads has no `backup_id` line (seen from barman-cloud-backup 3.19.1 by
    // `cluster-agent/tests/agent/barman.rs`); one that names another backup is not this one's.
    if let Some(named) = info.get("backup_id")
        && named != id
    {
        return Ok(Some(format!("Barman's backup.info names backup {named}, not {id}")));
    }
    if info.get("status") != Some("DONE") {
        return Ok(Some(format!(
            "Barman's backup.info says status {}, not DONE",
            info.get("status").unwrap_or("none")
        )));
    }
    let (Some(begin), Some(end)) = (info.get("begin_wal"), info.get("end_wal")) else {
        return Ok(Some("Barman's backup.info names no begin_wal/end_wal".into()));
    };
    let Some(needed) = segments(begin, end) else {
        return Ok(Some(format!("Barman's backup.info has no WAL range from {begin} to {end}")));
    };
    let mut archived: HashMap<String, Vec<String>> = HashMap::new();
    for segment in needed {
        let dir = format!("{server_prefix}/wals/{}", &segment[..16]);
        if !archived.contains_key(&dir) {
            let names = list(dir.clone())
                .await?
                .into_iter()
                .filter_map(|o| o.key.rsplit('/').next().map(str::to_owned))
                .collect();
            archived.insert(dir.clone(), names);
        }
        // `<segment>` or `<segment>.<compression>`; not `<segment>.<offset>.backup` (a backup label).
        let found = archived[&dir].iter().any(|name| {
            name == &segment
                || name.strip_prefix(segment.as_str()).is_some_and(|rest| {
                    rest.starts_with('.')
                        && !rest.ends_with(".backup")
                        && rest[1..].chars().all(|c| c.is_ascii_alphanumeric())
                })
        });
        if !found {
            return Ok(Some(format!(
                "WAL segment {segment}, which the backup needs to start, is not in the archive"
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_a_backup_needs_runs_across_logs() {
        assert_eq!(
            segments("0000000100000000000000FE", "000000010000000100000001").unwrap(),
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert_eq!(segments("000000010000000000000002", "000000010000000000000002").unwrap().len(), 1);
        assert_eq!(
            segments("000000020000000000000002", "000000010000000000000003"),
            None,
            "another timeline"
        );
        assert_eq!(segments("000000010000000000000003", "000000010000000000000002"), None, "backwards");
    }

    #[test]
    fn a_backup_info_is_read_as_barman_writes_it() {
        let info = BackupInfo::parse(
            "backup_id=20261206T101955\nstatus=DONE\nsize=None\nbegin_wal=000000010000000000000002\n",
        );
        assert_eq!(info.get("status"), Some("DONE"));
        assert_eq!(info.get("size"), None, "None is unset");
        assert_eq!(info.get("begin_wal"), Some("000000010000000000000002"));
    }
}

//! The command line: what `cpctl` accepts (clap derive), nothing else.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Managed PostgreSQL, MongoDB, InfluxDB and Grafana from the command line.
#[derive(Debug, Parser)]
#[command(name = "cpctl", version)]
pub(crate) struct Cli {
    /// the API's base URL (default: the profile's)
    #[arg(long, env = "CPCTL_API", global = true)]
    pub(crate) api: Option<String>,
    /// the project to act in (default: the profile's)
    #[arg(long, short = 'p', env = "CPCTL_PROJECT", global = true)]
    pub(crate) project: Option<String>,
    /// the profile of the config file to use (default: its `current`)
    #[arg(long, env = "CPCTL_PROFILE", global = true)]
    pub(crate) profile: Option<String>,
    /// the config file (default: ~/.config/cpctl/config.yaml)
    #[arg(long, env = "CPCTL_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// output format
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--wait` and how long.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Wait {
    /// follow the operation until it ends; exit 1 with the reason when it fails
    #[arg(long, short = 'w')]
    pub(crate) wait: bool,
    /// how long --wait waits (e.g. 90s, 10m)
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Instances: list, show, create, update, delete
    #[command(subcommand, visible_alias = "i")]
    Instances(Instances),
    /// Backups of an instance, and restoring one
    #[command(subcommand)]
    Backups(Backups),
    /// Backup schedules of an instance
    #[command(subcommand)]
    Schedules(Schedules),
    /// Network ACL of an instance
    #[command(subcommand)]
    Acl(Acl),
    /// Service configuration of an instance
    #[command(subcommand)]
    Config(Config),
    /// Maintenance window of an instance, and what is held for it
    #[command(subcommand)]
    Maintenance(Maintenance),
    /// Database users of an instance, each with a role from the service's catalog
    #[command(subcommand)]
    Users(Users),
    /// What can be provisioned: services, versions, plans, parameters
    Catalog {
        /// only this service
        service: Option<String>,
    },
    /// An operation
    #[command(subcommand)]
    Operations(Operations),
    /// Clusters (platform admins): list, cordon, drain; move an instance to another cluster
    #[command(subcommand)]
    Fleet(Fleet),
    /// Every event of an instance, decided and observed, in order
    History {
        /// instance name or id
        instance: String,
        /// at most this many events (the newest page is not skipped to: pages go forward)
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// What changed in an instance between two moments
    Diff {
        /// instance name or id
        instance: String,
        /// from this moment (RFC 3339)
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// to this moment (RFC 3339; default now)
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Audit: verify an instance's tamper-evident chain
    #[command(subcommand)]
    Audit(Audit),
    /// Print shell completions
    Completions {
        /// the shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Instances {
    /// List the project's instances
    #[command(visible_alias = "ls")]
    List {
        /// only instances in this state (healthy, reconciling, error)
        #[arg(long)]
        state: Option<String>,
        /// only the instance with this name
        #[arg(long)]
        name: Option<String>,
    },
    /// Show an instance (now, or as it was at a moment)
    Get {
        /// instance name or id
        instance: String,
        /// as it was at this moment (RFC 3339)
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Provision an instance
    Create {
        /// name (a DNS-1123 label, unique in the project)
        name: String,
        /// postgresql, mongodb, influxdb or grafana
        #[arg(long)]
        service: String,
        /// service version, from the catalog
        #[arg(long)]
        version: String,
        /// plan, from the catalog
        #[arg(long)]
        plan: String,
        /// cluster to place it on
        #[arg(long)]
        cluster: Option<String>,
        /// region to place it in, when no cluster is named
        #[arg(long)]
        region: Option<String>,
        /// storage in GiB (default: the plan's)
        #[arg(long)]
        storage_gib: Option<u32>,
        /// configuration, KEY=VALUE (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// who may connect, a CIDR (repeatable)
        #[arg(long = "allow", value_name = "CIDR")]
        acl: Vec<String>,
        /// free text
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change an instance's version, plan, storage or description
    Update {
        /// instance name or id
        instance: String,
        /// new version (upgrade only)
        #[arg(long)]
        version: Option<String>,
        /// new plan
        #[arg(long)]
        plan: Option<String>,
        /// new storage in GiB (grow only)
        #[arg(long)]
        storage_gib: Option<u32>,
        /// new description
        #[arg(long)]
        description: Option<String>,
        /// refuse (true) or allow (false) deletion
        #[arg(long)]
        deletion_protection: Option<bool>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Deprovision an instance
    #[command(visible_alias = "rm")]
    Delete {
        /// instance name or id
        instance: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Backups {
    /// List an instance's backups
    #[command(visible_alias = "ls")]
    List {
        /// instance name or id
        instance: String,
    },
    /// Show one backup
    Get {
        /// instance name or id
        instance: String,
        /// backup id
        backup: uuid::Uuid,
    },
    /// Back an instance up now
    Create {
        /// instance name or id
        instance: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a backup
    #[command(visible_alias = "rm")]
    Delete {
        /// instance name or id
        instance: String,
        /// backup id
        backup: uuid::Uuid,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restore an instance from one of its backups, in place
    Restore {
        /// instance name or id
        instance: String,
        /// the backup
        #[arg(long)]
        backup: uuid::Uuid,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Schedules {
    /// List an instance's backup schedules
    #[command(visible_alias = "ls")]
    List {
        /// instance name or id
        instance: String,
    },
    /// Add a backup schedule
    Create {
        /// instance name or id
        instance: String,
        /// a name for it
        #[arg(long)]
        name: String,
        /// when, as five-field cron (`0 3 * * *`)
        #[arg(long)]
        cron: String,
        /// the cron's time zone (IANA name)
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// keep at most this many of its backups
        #[arg(long)]
        keep_last: Option<u32>,
        /// delete its backups older than this many days
        #[arg(long)]
        max_age_days: Option<u32>,
        /// create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// Remove a backup schedule
    #[command(visible_alias = "rm")]
    Delete {
        /// instance name or id
        instance: String,
        /// schedule id
        schedule: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Acl {
    /// Show who may connect
    Get {
        /// instance name or id
        instance: String,
    },
    /// Let a CIDR connect
    Add {
        /// instance name or id
        instance: String,
        /// the CIDR (an address alone is one host)
        cidr: String,
        /// why
        #[arg(long, default_value = "")]
        description: String,
        /// needed for 0.0.0.0/0 and ::/0
        #[arg(long)]
        allow_public: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a CIDR connecting
    #[command(visible_alias = "rm")]
    Remove {
        /// instance name or id
        instance: String,
        /// the CIDR
        cidr: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Config {
    /// Show an instance's configuration
    Get {
        /// instance name or id
        instance: String,
    },
    /// Set configuration keys (values parse as JSON when they can: 100, true; else they are strings)
    Set {
        /// instance name or id
        instance: String,
        /// KEY=VALUE pairs
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove configuration keys (back to the service's default)
    Unset {
        /// instance name or id
        instance: String,
        /// keys
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Fleet {
    /// Every registered cluster: its agent's state, instances, cordon and drain
    Clusters,
    /// Place no new instance on a cluster
    Cordon {
        /// cluster name
        cluster: String,
    },
    /// Take new instances on a cluster again (a drain of it stops starting moves)
    Uncordon {
        /// cluster name
        cluster: String,
    },
    /// Cordon a cluster and move every instance on it to another cluster of its region
    Drain {
        /// cluster name
        cluster: String,
        /// how many instances move at once (1 to 16)
        #[arg(long, default_value_t = 1)]
        parallel: u32,
    },
    /// Move an instance to another cluster of its region (from a fresh backup; it serves where it is until
    /// the switch)
    Migrate {
        /// instance name or id
        instance: String,
        /// the cluster to move to
        #[arg(long)]
        to: String,
    },
    /// Give up an instance's move in progress (it keeps serving where it was)
    CancelMigration {
        /// instance name or id
        instance: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Maintenance {
    /// Show an instance's maintenance window and what is held for it (and when it will be applied)
    Get {
        /// instance name or id
        instance: String,
    },
    /// Apply what is held for the window now (restart-mode configuration changes: the service restarts)
    Apply {
        /// instance name or id
        instance: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Users {
    /// List an instance's users and whether the engine has applied them
    #[command(visible_alias = "ls")]
    List {
        /// instance name or id
        instance: String,
    },
    /// Create a user (its password is made in the cluster: read it with `users credentials`)
    Create {
        /// instance name or id
        instance: String,
        /// the user's name (1-63 of a-z, 0-9 and _, starting with a letter)
        name: String,
        /// its role: PostgreSQL readwrite or readonly, MongoDB readWrite or read
        #[arg(long)]
        role: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a user: the engine revokes it
    #[command(visible_alias = "rm")]
    Delete {
        /// instance name or id
        instance: String,
        /// the user's name
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Give a user a new password, made in the cluster
    Rotate {
        /// instance name or id
        instance: String,
        /// the user's name
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print a user's credentials, read from the cluster now (editors only)
    Credentials {
        /// instance name or id
        instance: String,
        /// the user's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Operations {
    /// Show an operation (and follow it with --wait)
    Get {
        /// operation id
        operation: uuid::Uuid,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Audit {
    /// Walk an instance's audit chain; exit 1 naming the first message that does not follow
    Verify {
        /// instance name or id
        instance: String,
    },
}

/// `90s`, `10m`, `1h` or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration like 90s, 10m or 1h")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}

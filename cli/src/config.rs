//! Profiles: which API and project a command talks to, from a YAML file, overridden by flags and the
//! environment. The token never lives in the file: it comes from `CPCTL_TOKEN` (or the variable a
//! profile names), so a config file can be shared and committed.
//!
//! ```yaml
//! current: prod
//! profiles:
//!   prod: {api: https://cp.example.com, project: acme}
//!   local: {api: http://127.0.0.1:8080, project: acme, token_env: CP_LOCAL_TOKEN}
//! ```

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// the profile used when none is named
    #[serde(default)]
    pub(crate) current: Option<String>,
    /// profiles by name
    #[serde(default)]
    pub(crate) profiles: BTreeMap<String, Profile>,
}

/// One API and project.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    /// the API's base URL
    #[serde(default)]
    pub(crate) api: Option<String>,
    /// the project commands act in
    #[serde(default)]
    pub(crate) project: Option<String>,
    /// the environment variable holding the token (default `CPCTL_TOKEN`)
    #[serde(default)]
    pub(crate) token_env: Option<String>,
}

/// Where the config file is by default: `$CPCTL_CONFIG`, else `$XDG_CONFIG_HOME/cpctl/config.yaml`, else
/// `~/.config/cpctl/config.yaml`.
pub(crate) fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("cpctl").join("config.yaml"))
}

/// The profile `name` (or the file's current one) from the file at `path`; an absent file is an empty
/// profile, a named profile that is not there an error.
pub(crate) fn load(path: Option<PathBuf>, name: Option<&str>) -> anyhow::Result<Profile> {
    let Some(path) = path.or_else(default_path) else { return Ok(Profile::default()) };
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => serde_saphyr::from_str::<ConfigFile>(&text)
            .with_context(|| format!("reading config file {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_none() => return Ok(Profile::default()),
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    match name.map(str::to_owned).or(file.current.clone()) {
        None => Ok(Profile::default()),
        Some(name) => file.profiles.get(&name).cloned().with_context(|| {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            format!("no profile {name:?} in {} (it has: {})", path.display(), known.join(", "))
        }),
    }
}

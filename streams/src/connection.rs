//! How a process proves who it is to nats-server: user and password or a token in the URL
//! (`nats://user:password@host:port`, `nats://token@host:port`), an nkey seed file, or a `.creds` file
//! (a user JWT and its seed, for operator-mode deployments). async-nats reads none of the URL's user
//! information itself, so it is taken out here and handed over as options; the URL that remains, and
//! is logged, holds no secret.

use std::path::PathBuf;

use async_nats::{ConnectOptions, ServerAddr};

/// Where and as whom a process reaches NATS: the flags (and environment variables) every binary of the
/// project takes alike. `global`, so a binary with subcommands takes them before or after its subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated; a user and password (`nats://user:password@host`) or a
    /// token (`nats://token@host`) in it authenticate, and never reach the logs
    #[arg(
        long,
        env = "CP_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true,
        hide_env_values = true
    )]
    pub nats_url: String,
    /// NATS credentials file (`.creds`: user JWT and seed)
    #[arg(long, env = "CP_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// a file holding this process's NATS nkey seed
    #[arg(long, env = "CP_NATS_NKEY", global = true)]
    pub nats_nkey: Option<PathBuf>,
    /// PEM certificate authorities to trust for NATS over TLS (`tls://` URLs); TLS is then required
    #[arg(long, env = "CP_NATS_CA", global = true)]
    pub nats_ca: Option<PathBuf>,
}

impl NatsArgs {
    /// The credentials besides the URL's.
    pub fn auth(&self) -> NatsAuth {
        NatsAuth {
            nkey_file: self.nats_nkey.clone(),
            creds_file: self.nats_creds.clone(),
            ca_file: self.nats_ca.clone(),
        }
    }

    /// Connects with `options`, authenticated as these arguments say.
    pub async fn connect(&self, options: ConnectOptions) -> Result<async_nats::Client, ConnectError> {
        connect(options, &self.nats_url, &self.auth()).await
    }
}

/// Credentials besides the URL's.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// a file holding an nkey seed (`SU…`)
    pub nkey_file: Option<PathBuf>,
    /// a `.creds` file (user JWT and seed)
    pub creds_file: Option<PathBuf>,
    /// a PEM file of the certificate authorities to trust for TLS; TLS is then required
    pub ca_file: Option<PathBuf>,
}

/// Why the credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsAuthError {
    /// the URL is not a NATS URL
    #[error("NATS URL: {0}")]
    Url(String),
    /// a credentials file could not be read
    #[error("reading {path}: {source}")]
    File {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// more than one kind of credentials was given
    #[error("give one kind of NATS credentials: user information in the URL, an nkey file or a creds file")]
    Ambiguous,
}

/// `options` authenticating as `auth` and the URL says, and the URL without its user information.
pub async fn authenticate(
    options: ConnectOptions,
    url: &str,
    auth: &NatsAuth,
) -> Result<(ConnectOptions, String), NatsAuthError> {
    // A comma-separated list of servers; the user information may be on any of them.
    let mut user = None;
    let mut password = None;
    let mut bare = Vec::new();
    for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let address: ServerAddr =
            one.parse().map_err(|e: std::io::Error| NatsAuthError::Url(e.to_string()))?;
        if user.is_none() {
            user = address.username().map(str::to_owned);
            password = address.password().map(str::to_owned);
        }
        bare.push(match address.as_url_str().split_once('@') {
            Some((scheme_and_user, host)) => {
                let scheme = scheme_and_user.split_once("://").map_or("nats", |(scheme, _)| scheme);
                format!("{scheme}://{host}")
            }
            None => address.as_url_str().to_owned(),
        });
    }
    let bare = bare.join(",");
    let kinds = [user.is_some(), auth.nkey_file.is_some(), auth.creds_file.is_some()];
    if kinds.iter().filter(|given| **given).count() > 1 {
        return Err(NatsAuthError::Ambiguous);
    }
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| NatsAuthError::File { path: path.clone(), source })
    };
    let options = match (user, password, &auth.nkey_file, &auth.creds_file) {
        (Some(user), Some(password), _, _) => options.user_and_password(decode(&user), decode(&password)),
        (Some(token), None, _, _) => options.token(decode(&token)),
        (None, _, Some(nkey), _) => options.nkey(read(nkey)?.trim().to_owned()),
        (None, _, None, Some(creds)) => options
            .credentials_file(creds)
            .await
            .map_err(|source| NatsAuthError::File { path: creds.clone(), source })?,
        (None, _, None, None) => options,
    };
    let options = match &auth.ca_file {
        Some(ca) => options.add_root_certificates(ca.clone()).require_tls(true),
        None => options,
    };
    Ok((options, bare))
}

/// Why a process could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// the credentials could not be used
    #[error(transparent)]
    Auth(#[from] NatsAuthError),
    /// the server could not be reached or refused the credentials
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        /// the URL, without user information
        url: String,
        /// why
        source: async_nats::ConnectError,
    },
}

/// Connects with `options`, authenticated as `url` and `auth` say.
pub async fn connect(
    options: ConnectOptions,
    url: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, ConnectError> {
    let (options, bare) = authenticate(options, url, auth).await?;
    options.connect(bare.as_str()).await.map_err(|source| ConnectError::Connect { url: bare, source })
}

/// URL user information is percent-encoded (RFC 3986 section 3.2.1).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn user_information_leaves_the_url() {
        let (_, bare) =
            authenticate(ConnectOptions::new(), "nats://cp:p%40ss@127.0.0.1:4222", &NatsAuth::default())
                .await
                .unwrap();
        assert_eq!(bare, "nats://127.0.0.1:4222");
        assert_eq!(decode("p%40ss%2F"), "p@ss/");
        let (_, bare) = authenticate(
            ConnectOptions::new(),
            "nats://a:b@127.0.0.1:4222, nats://127.0.0.1:4223",
            &NatsAuth::default(),
        )
        .await
        .unwrap();
        assert_eq!(bare, "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
        let (_, bare) =
            authenticate(ConnectOptions::new(), "tls://127.0.0.1:4222", &NatsAuth::default()).await.unwrap();
        assert_eq!(bare, "tls://127.0.0.1:4222");
        let both = NatsAuth { nkey_file: Some("x".into()), ..Default::default() };
        let error =
            authenticate(ConnectOptions::new(), "nats://cp:p@127.0.0.1:4222", &both).await.unwrap_err();
        assert!(matches!(error, NatsAuthError::Ambiguous));
    }
}

//! `cp-api`: the control plane's HTTP API process. Wires configuration, NATS, the event store and the
//! router together; everything else lives in the library.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use api::{AppState, app};
use clap::Parser;
use streams::{CommitMode, Settings};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};

// glibc malloc showed up as the largest cost in profiles of the write path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Managed-services control plane: REST API.
#[derive(Debug, Parser)]
#[command(name = "cp-api", version)]
struct Config {
    #[command(flatten)]
    nats: streams::connection::NatsArgs,
    /// address to serve HTTP on
    #[arg(long, env = "CP_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// clusters to register at start, as `name=region` pairs, comma separated
    #[arg(long, env = "CP_CLUSTERS", value_delimiter = ',')]
    clusters: Vec<String>,
    /// replicas of the JetStream stream and buckets (1 for one server, 3 in production)
    #[arg(long, env = "CP_JETSTREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// how the event store sends commands' messages: `grouped` (concurrent commands share one atomic
    /// batch and one fsync; for JetStream with `sync_interval: always`, the shipped setting, and for
    /// streams with three replicas whatever the sync) or `one-by-one` (pipelined single publishes;
    /// faster on one server that does not fsync every write)
    #[arg(long, env = "CP_COMMIT_MODE", value_enum, default_value_t = CommitModeArg::Grouped)]
    commit_mode: CommitModeArg,
    /// the service catalog (YAML or JSON, `format: 1`): what may be provisioned, on which plans, with
    /// which parameters; the built-in one when absent. Checked whole at start: a bad file stops the
    /// process with every problem named.
    #[arg(long, env = "CP_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    /// print the built-in catalog as JSON (a starting point for `--catalog`) and exit
    #[arg(long)]
    print_builtin_catalog: bool,
    /// API tokens that authenticate callers: a YAML or JSON list of `{name, sha256, subject,
    /// platform_admin, projects: {<project or *>: viewer|editor|admin}}`; only each token's SHA-256
    #[arg(long, env = "CP_API_TOKENS_FILE")]
    api_tokens_file: Option<std::path::PathBuf>,
    /// the same list inline (added to the file's)
    #[arg(long, env = "CP_API_TOKENS", hide_env_values = true)]
    api_tokens: Option<String>,
    /// an OpenID Connect issuer whose JWTs authenticate callers (its `iss`); their roles come from the
    /// claims `cp_projects` ({<project or *>: viewer|editor|admin}) and `cp_platform_admin`
    #[arg(long, env = "CP_OIDC_ISSUER", requires = "oidc_audience")]
    oidc_issuer: Option<String>,
    /// the audience the issuer's tokens must be for (`aud`): this API's client id there
    #[arg(long, env = "CP_OIDC_AUDIENCE", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// the issuer's JWKS URL, when it is not the `jwks_uri` its discovery document names
    #[arg(long, env = "CP_OIDC_JWKS_URL", requires = "oidc_issuer")]
    oidc_jwks_url: Option<String>,
    /// print a new random API token and the entry that configures it with the `--grant`s given, and
    /// exit; the token is shown once, only its hash goes into the configuration
    #[arg(long, value_name = "NAME", requires = "grant")]
    new_token: Option<String>,
    /// with `--new-token`: a role it holds, `PROJECT=ROLE` (`viewer`, `editor`, `admin`; `*` for every
    /// project), repeatable; `platform-admin` makes it a platform admin. Nothing is granted by default.
    #[arg(long, value_name = "PROJECT=ROLE", requires = "new_token")]
    grant: Vec<String>,
    /// write nats-server's `accounts` block for the control plane and the agents of `--nats-clusters` to
    /// FILE (deploy/nats/), making the nkey seeds missing from `--nats-identities-dir` (existing ones are
    /// kept), and exit; reload nats-server afterwards
    #[arg(long, value_name = "FILE", requires_all = ["nats_identities_dir", "nats_clusters"])]
    write_nats_accounts: Option<std::path::PathBuf>,
    /// where `--write-nats-accounts` keeps the seeds: `control-plane.nk` (cp-api, cp-projector) and
    /// `agent-<cluster>.nk` (each cluster's agent), mode 0600
    #[arg(long, value_name = "DIR")]
    nats_identities_dir: Option<std::path::PathBuf>,
    /// the clusters `--write-nats-accounts` makes agent accounts for (comma separated)
    #[arg(long, value_name = "CLUSTERS", value_delimiter = ',')]
    nats_clusters: Vec<String>,
    /// most feeds (`GET …/events`) one caller may hold open at once; more answer 429
    #[arg(long, env = "CP_MAX_FEEDS_PER_CALLER", default_value_t = api::limits::DEFAULT_FEEDS_PER_CALLER)]
    max_feeds_per_caller: usize,
    /// most history reads (history, `as_of`, diff, verify) one caller may run at once; more answer 429
    #[arg(long, env = "CP_MAX_HISTORY_READS_PER_CALLER", default_value_t = api::limits::DEFAULT_HISTORY_READS_PER_CALLER)]
    max_history_reads_per_caller: usize,
    /// create or update the streams and buckets this version needs, and exit: run it with the admin NATS
    /// identity before starting (or upgrading) `cp-api` and `cp-projector`, which only open them
    #[arg(long)]
    migrate: bool,
    /// log as JSON lines
    #[arg(long, env = "CP_LOG_JSON")]
    log_json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CommitModeArg {
    Grouped,
    OneByOne,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_builtin_catalog {
        println!("{}", serde_json::to_string_pretty(domain::Catalog::builtin())?);
        return Ok(());
    }
    if let (Some(out), Some(dir)) = (&config.write_nats_accounts, &config.nats_identities_dir) {
        use streams::identities::{NatsRole, accounts_conf, ensure_identities};
        let mut roles = vec![NatsRole::Admin, NatsRole::ControlPlane];
        roles.extend(config.nats_clusters.iter().map(|c| NatsRole::Agent { cluster: c.clone() }));
        let keys =
            ensure_identities(dir, &roles).with_context(|| format!("identities in {}", dir.display()))?;
        let agents: Vec<_> = config.nats_clusters.iter().cloned().zip(keys[2..].iter().cloned()).collect();
        std::fs::write(out, accounts_conf(&Settings::default(), &keys[0], &keys[1..2], &agents))
            .with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    if let Some(name) = &config.new_token {
        let token = api::auth::new_token();
        let (platform_admin, projects) = api::auth::parse_grants(&config.grant)?;
        let entry = api::auth::TokenEntry {
            name: name.clone(),
            sha256: api::auth::hash_token(&token),
            subject: name.clone(),
            platform_admin,
            projects,
        };
        eprintln!("token (shown once): {token}");
        println!("{}", serde_json::to_string(&[entry])?);
        return Ok(());
    }
    // Before anything else: a bad catalog or token list stops the process at once, naming the problem.
    let catalog = config.catalog.as_deref().map(api::catalog_file::load).transpose()?;
    let mut tokens = api::auth::ApiTokens::none();
    if let Some(path) = &config.api_tokens_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tokens = tokens.merge(api::auth::ApiTokens::parse(&text)?);
    }
    if let Some(inline) = &config.api_tokens {
        tokens = tokens.merge(api::auth::ApiTokens::parse(inline)?);
    }
    anyhow::ensure!(
        config.migrate || !tokens.is_empty() || config.oidc_issuer.is_some(),
        "neither API tokens (CP_API_TOKENS_FILE or CP_API_TOKENS) nor an OIDC issuer (CP_OIDC_ISSUER) is \
         configured: every request would be refused; `cp-api --new-token NAME` makes a token"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if config.log_json {
        registry.with(tracing_subscriber::fmt::layer().json()).init();
    } else {
        registry.with(tracing_subscriber::fmt::layer()).init();
    }

    let options = async_nats::ConnectOptions::new()
        .name("cp-api")
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
        .event_callback(|event| async move { tracing::info!(%event, "nats connection event") });
    let nats = config.nats.connect(options).await?;
    let commit_mode = match config.commit_mode {
        CommitModeArg::Grouped => CommitMode::Grouped,
        CommitModeArg::OneByOne => CommitMode::OneByOne,
    };
    let settings = Settings { replicas: config.replicas, commit_mode, ..Settings::default() };
    if config.migrate {
        // The admin's job: create or update the streams and buckets, then exit.
        let topology =
            settings.apply(&async_nats::jetstream::new(nats)).await.context("migrating the topology")?;
        let remade = streams::cluster_feed::migrate_registered(&topology)
            .await
            .context("migrating the clusters' feeds")?;
        if !remade.is_empty() {
            tracing::info!(clusters = ?remade, "feeds made again with this version's persist mode");
        }
        tracing::info!("streams and buckets are as this version wants them");
        return Ok(());
    }
    // Opened, not applied: this process's identity may not change the streams (`cp-api --migrate` does).
    let mut state = AppState::open(nats, &settings).await.context("starting the control plane")?;
    state = state.with_tokens(tokens).with_limits(api::limits::CallerLimits::new(
        config.max_feeds_per_caller,
        config.max_history_reads_per_caller,
    ));
    if let (Some(issuer), Some(audience)) = (&config.oidc_issuer, &config.oidc_audience) {
        let oidc = api::auth::OidcConfig {
            jwks_url: config.oidc_jwks_url.clone(),
            ..api::auth::OidcConfig::new(issuer, audience)
        };
        let verifier = api::auth::OidcVerifier::discover(oidc).await?;
        tracing::info!(%issuer, "authenticating JWTs from the OIDC issuer");
        state = state.with_oidc(verifier);
    }
    if let Some(catalog) = catalog {
        tracing::info!(services = catalog.services.len(), "catalog loaded");
        state = state.with_catalog(std::sync::Arc::new(catalog));
    }
    for pair in &config.clusters {
        let (name, region) =
            pair.split_once('=').with_context(|| format!("CP_CLUSTERS entry {pair:?} is not name=region"))?;
        let cluster = domain::Cluster { name: name.trim().to_owned(), region: region.trim().to_owned() };
        domain::instance::check_dns_label("cluster", &cluster.name)?;
        state.clusters.register(&cluster).await?;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = shutdown_signal();
    tracing::info!(address = %config.listen, "serving");
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// SIGTERM (what Kubernetes sends a pod it stops) or Ctrl-C: requests in flight finish, new connections
/// are refused. The handler is installed when this is called (before the API says it serves), not when
/// the future is first polled, so a SIGTERM right after start is not the default, fatal one.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        match terminate {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down");
    }
}

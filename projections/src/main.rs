//! `cp-projector`: folds the event stream into the read-model bucket (`run`), or folds it from scratch
//! and compares with the live read models (`rebuild`). Wiring only; the work lives in the library.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use projections::{ProjectorMetrics, rebuild};
use prometheus_client::registry::Registry;
use streams::{Settings, read_models::ReadModelBucket};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Managed-services control plane: read-model projector.
#[derive(Debug, Parser)]
#[command(name = "cp-projector", version)]
struct Options {
    #[command(flatten)]
    nats: streams::connection::NatsArgs,
    /// replicas of the JetStream stream and buckets (1 for one server, 3 in production)
    #[arg(long, env = "CP_JETSTREAM_REPLICAS", default_value_t = 1, global = true)]
    replicas: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep the read models current, move the clusters' facts in, watch their liveness and run the backup
    /// scheduler and worker: in one replica at a time (the lease `projector`); others stand by and take
    /// over within the lease's time to live
    Run {
        /// address of /metrics and /healthz
        #[arg(long, env = "CP_PROJECTOR_LISTEN", default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
        /// how many facts per second one cluster's agent may add to the event stream, sustained
        /// (`projections::intake`)
        #[arg(long, env = "CP_INTAKE_FACTS_PER_SECOND", default_value_t = projections::intake::IntakeLimits::default().per_second)]
        intake_facts_per_second: std::num::NonZeroU32,
        /// how many facts one cluster's agent may add at once after a quiet spell
        #[arg(long, env = "CP_INTAKE_BURST", default_value_t = projections::intake::IntakeLimits::default().burst)]
        intake_burst: std::num::NonZeroU32,
        /// seconds without a heartbeat after which a cluster counts as unreachable and its instances show
        /// `unknown` (`projections::liveness`)
        #[arg(long, env = "CP_CLUSTER_SILENCE_SECONDS", default_value_t = projections::liveness::DEFAULT_SILENCE.as_secs())]
        cluster_silence_seconds: u64,
        /// S3 endpoint of the backup store; with it, this process verifies reported backups and deletes
        /// the objects of deleted ones (`projections::backup_worker`)
        #[arg(long, env = "CP_BACKUP_STORE_ENDPOINT", requires_all = ["backup_store_bucket", "backup_store_access_key_id", "backup_store_secret_access_key"])]
        backup_store_endpoint: Option<String>,
        /// days a deprovisioned instance's backups stay restorable after its removal
        #[arg(long, env = "CP_BACKUP_RETENTION_AFTER_DEPROVISION_DAYS",
              default_value_t = projections::backup_scheduler::RETENTION_AFTER_DEPROVISION_DAYS)]
        backup_retention_after_deprovision_days: u32,
        /// minutes a move between clusters may take before it is given up (the instance then keeps
        /// serving where it was; `projections::migrations`)
        #[arg(long, env = "CP_MIGRATION_TIMEOUT_MINUTES",
              default_value_t = projections::migrations::DEFAULT_TIMEOUT.as_secs() / 60)]
        migration_timeout_minutes: u64,
        /// bucket of the backup store
        #[arg(long, env = "CP_BACKUP_STORE_BUCKET")]
        backup_store_bucket: Option<String>,
        /// access key id of the backup store (from the environment)
        #[arg(long, env = "CP_BACKUP_STORE_ACCESS_KEY_ID", hide_env_values = true)]
        backup_store_access_key_id: Option<String>,
        /// secret access key of the backup store (from the environment)
        #[arg(long, env = "CP_BACKUP_STORE_SECRET_ACCESS_KEY", hide_env_values = true)]
        backup_store_secret_access_key: Option<String>,
    },
    /// Fold the whole stream into fresh read models, compare them with the live ones and print the rates;
    /// exits 1 when they differ
    Rebuild,
    /// Print an audit report: per instance, each command (who, what, when) and what its cluster observed
    /// after it, read from the event stream
    Audit {
        /// the project
        #[arg(long)]
        project: String,
        /// only this instance
        #[arg(long)]
        instance: Option<uuid::Uuid>,
        /// only what was stored from this moment on (RFC 3339)
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Walk the audit chain of the event stream (or of one instance) and name the first message that does
    /// not follow from the ones before it; exits 1 when the chain breaks
    Verify {
        /// the stream to walk (e.g. a restored copy); the live event stream when absent
        #[arg(long)]
        stream: Option<String>,
        /// only this project's instance (with --instance)
        #[arg(long, requires = "instance")]
        project: Option<String>,
        /// only this instance (with --project)
        #[arg(long, requires = "project")]
        instance: Option<uuid::Uuid>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
    let options = Options::parse();
    let connect = async_nats::ConnectOptions::new()
        .name("cp-projector")
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)));
    let nats = options.nats.connect(connect).await?;
    let client = nats.clone();
    let settings = Settings { replicas: options.replicas, ..Settings::default() };
    // Opened, not applied: the projector's identity may not change the streams (`cp-api --migrate` does).
    let topology = settings.open(&async_nats::jetstream::new(nats)).await?;
    let bucket = ReadModelBucket::new(&topology);
    match options.command {
        Command::Run {
            listen,
            intake_facts_per_second,
            intake_burst,
            cluster_silence_seconds,
            backup_store_endpoint,
            backup_store_bucket,
            backup_store_access_key_id,
            backup_store_secret_access_key,
            backup_retention_after_deprovision_days,
            migration_timeout_minutes,
        } => {
            // The backup scheduler and worker read the read models as an API replica does.
            let models = projections::ReadModels::start(bucket.clone(), Duration::from_secs(30)).await?;
            let store = match (
                backup_store_endpoint,
                backup_store_bucket,
                backup_store_access_key_id,
                backup_store_secret_access_key,
            ) {
                (Some(endpoint), Some(store_bucket), Some(access_key_id), Some(secret_access_key)) => {
                    let config = backup_store::StoreConfig {
                        endpoint,
                        bucket: store_bucket,
                        region: "us-east-1".into(),
                        access_key_id,
                        secret_access_key,
                    };
                    tracing::info!(store = ?config, "verifying and deleting backup objects, giving instances keys");
                    Some((
                        backup_store::BackupStore::new(&config)?,
                        backup_store::access::AccessAdmin::new(&config)?,
                    ))
                }
                _ => {
                    tracing::warn!(
                        "no backup store given: reported backups are not verified and deleted ones keep their objects"
                    );
                    None
                }
            };
            let mut registry = Registry::default();
            let metrics = ProjectorMetrics::default().register(&mut registry);
            // Agents' facts reach the event stream only through their clusters' intakes.
            let intake_metrics = projections::intake::IntakeMetrics::default().register(&mut registry);
            let access_metrics =
                projections::store_access::StoreAccessMetrics::default().register(&mut registry);
            let leading_gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
            registry.register(
                "cp_projector_leading",
                "1 while this replica holds the projector's lease and does its work, else 0",
                leading_gauge.clone(),
            );
            let clusters = streams::clusters::ClusterRegistry::open(&topology).await?;
            // The singleton's work, started anew each time this replica takes the lease: the fold, the
            // intake gate, the liveness watch, the backup scheduler and worker (`projections::leader`).
            let singleton = projections::singleton::Singleton {
                topology: topology.clone(),
                models,
                client,
                store,
                metrics,
                intake_metrics,
                access_metrics,
                clusters,
                limits: projections::intake::IntakeLimits {
                    per_second: intake_facts_per_second,
                    burst: intake_burst,
                },
                cluster_silence: Duration::from_secs(cluster_silence_seconds),
                retention_after_deprovision: chrono::TimeDelta::days(i64::from(
                    backup_retention_after_deprovision_days,
                )),
                scheduler_period: projections::singleton::SCHEDULER_PERIOD,
                migration_timeout: Duration::from_secs(migration_timeout_minutes.saturating_mul(60)),
            };
            let work = move || singleton.run();
            let holder = format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "projector".into()),
                std::process::id()
            );
            let lease = streams::lease::Lease::new(&topology, "projector", &holder);
            let (leading, mut leading_changes) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                while leading_changes.changed().await.is_ok() {
                    leading_gauge.set(i64::from(*leading_changes.borrow()));
                }
            });
            let registry = Arc::new(registry);
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            tracing::info!(address = %listener.local_addr()?, "projector serving /metrics");
            let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" })).route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut text = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                        (
                            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                            text,
                        )
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            tokio::select! {
                () = projections::leader::lead(lease, work, leading) => {}
                _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
            }
            Ok(())
        }
        Command::Audit { project, instance, since, json } => {
            let range = streams::history::HistoryRange { after: 0, until: None, limit: usize::MAX };
            let messages = streams::history::read_project_history(&topology.events, &project, range)
                .await
                .map_err(|e| anyhow::anyhow!("reading project {project}'s history: {e}"))?;
            let (mut audits, unreadable) = projections::audit::report(&messages, since);
            audits.retain(|a| instance.is_none_or(|id| a.instance_id == id));
            if json {
                println!("{}", serde_json::to_string_pretty(&audits)?);
            } else {
                print!("{}", projections::audit::render_text(&audits));
            }
            if unreadable > 0 {
                eprintln!("{unreadable} messages could not be read and are not in the report");
            }
            Ok(())
        }
        Command::Verify { stream, project, instance } => {
            let events = match &stream {
                Some(name) => {
                    topology.jetstream.get_stream(name).await.with_context(|| format!("stream {name}"))?
                }
                None => topology.events.clone(),
            };
            let filters = match (project, instance) {
                (Some(project), Some(id)) => streams::instances::instance_event_filters(&project, id),
                _ => vec![streams::instances::all_instances_filter()],
            };
            let report = streams::chain::verify(&events, filters).await.map_err(|e| anyhow::anyhow!(e))?;
            if let Some(broken) = &report.broken {
                println!("BROKEN: {broken}");
                println!("({} messages verified before it)", report.messages);
                std::process::exit(1);
            }
            println!(
                "ok: {} messages on {} subjects verified; {} older messages carry no chain",
                report.messages, report.subjects, report.unchained
            );
            Ok(())
        }
        Command::Rebuild => {
            let mut events = topology.events.clone();
            let last = events.info().await?.state.last_sequence;
            let raw = rebuild::fold_stream(&topology.events, last, false).await?;
            println!("raw read: {} messages in {:.2?}: {:.0} msg/s", raw.messages, raw.elapsed, raw.rate());
            let verification = rebuild::verify(&topology.events, &bucket).await?;
            let rebuilt = &verification.rebuilt;
            let (instances, operations) = rebuilt.model.len();
            println!(
                "rebuild: {} messages folded in {:.2?}: {:.0} events/s ({:.2} of the raw read); {instances} instances, {operations} operations, {} skipped",
                rebuilt.messages,
                rebuilt.elapsed,
                rebuilt.rate(),
                rebuilt.rate() / raw.rate(),
                rebuilt.model.skipped()
            );
            if verification.differences.is_empty() {
                println!("equal to the live read models at checkpoint {}", verification.checkpoint);
                Ok(())
            } else {
                println!(
                    "DIFFERENT from the live read models at checkpoint {}: {}",
                    verification.checkpoint,
                    verification.differences.join(", ")
                );
                std::process::exit(1);
            }
        }
    }
}

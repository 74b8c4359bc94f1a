//! Harness for end-to-end tests: a real nats-server, the API's state on it, and in-process HTTP calls
//! through the router (`tower::ServiceExt::oneshot`).

pub mod backups;
pub mod cluster;
pub mod parts;

use std::time::Duration;

use api::{AppState, app};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
pub use testkit::{NatsServer, Sync};
use tower::ServiceExt as _;

/// The platform admin's token (every project, admin), sent when a test names none.
pub const ADMIN_TOKEN: &str = "cpat_test_admin";
/// A viewer of project acme.
pub const ACME_VIEWER_TOKEN: &str = "cpat_test_acme_viewer";
/// An editor of project acme.
pub const ACME_EDITOR_TOKEN: &str = "cpat_test_acme_editor";
/// An editor of project other, and of nothing else.
pub const OTHER_EDITOR_TOKEN: &str = "cpat_test_other_editor";
/// An admin of project acme (not a platform admin).
pub const ACME_ADMIN_TOKEN: &str = "cpat_test_acme_admin";

/// The tokens every test API accepts.
pub fn test_tokens() -> api::auth::ApiTokens {
    use api::auth::{Role, TokenEntry, hash_token};
    let entry = |name: &str, token: &str, platform_admin, projects: &[(&str, Role)]| TokenEntry {
        name: name.into(),
        sha256: hash_token(token),
        subject: format!("{name}@tests"),
        platform_admin,
        projects: projects.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect(),
    };
    api::auth::ApiTokens::from_entries(vec![
        entry("admin", ADMIN_TOKEN, true, &[("*", Role::Admin)]),
        entry("acme-viewer", ACME_VIEWER_TOKEN, false, &[("acme", Role::Viewer)]),
        entry("acme-editor", ACME_EDITOR_TOKEN, false, &[("acme", Role::Editor)]),
        entry("other-editor", OTHER_EDITOR_TOKEN, false, &[("other", Role::Editor)]),
        entry("acme-admin", ACME_ADMIN_TOKEN, false, &[("acme", Role::Admin)]),
    ])
    .expect("valid test tokens")
}

/// A control plane on its own nats-server.
pub struct TestApi {
    /// the server; kill and restart it to inject faults
    pub nats_server: NatsServer,
    /// the API's state
    pub state: AppState,
    /// the projector's metrics (refused facts among them)
    pub projector_metrics: projections::ProjectorMetrics,
    /// the intake gate's metrics (facts moved and throttled per cluster)
    pub intake_metrics: projections::intake::IntakeMetrics,
    router: Router,
    connected: tokio::sync::watch::Receiver<bool>,
    /// each cluster's agent identity, made once: its account can be configured once
    agent_identities: std::sync::Mutex<std::collections::BTreeMap<String, testkit::NkeyUser>>,
}

/// One HTTP response, body parsed as JSON (or `Null`).
#[derive(Debug)]
pub struct Reply {
    /// status
    pub status: StatusCode,
    /// headers
    pub headers: HeaderMap,
    /// body
    pub body: Value,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The operation id a write's reply carries.
    pub fn operation_id(&self) -> uuid::Uuid {
        self.body["id"].as_str().and_then(|id| id.parse().ok()).expect("reply carries an operation id")
    }

    /// The `ETag` as a number.
    pub fn version(&self) -> u64 {
        self.header("etag")
            .and_then(|t| t.trim_matches('"').parse().ok())
            .expect("response has a numeric ETag")
    }
}

/// How long a test control plane waits for a heartbeat before it marks a cluster unreachable: long
/// enough that an agent starved of CPU on a loaded machine is not taken for silent.
pub const DEFAULT_CLUSTER_SILENCE: Duration = Duration::from_secs(15);

impl TestApi {
    /// A fresh control plane with two clusters registered (`eu-1`, `eu-2` in `eu-central`).
    pub async fn start() -> Self {
        Self::start_with(Sync::Default).await
    }

    /// The same, with a chosen JetStream sync policy.
    pub async fn start_with(sync: Sync) -> Self {
        Self::start_with_projector(sync, true, DEFAULT_CLUSTER_SILENCE).await
    }

    /// The same, with the projector marking a cluster unreachable after `silence` without a heartbeat
    /// (agents started by `cluster::agent` beat every 250 ms).
    pub async fn start_with_cluster_silence(silence: Duration) -> Self {
        Self::start_with_projector(Sync::Default, true, silence).await
    }

    /// The API without the projector: its read models never move, as when the projector is down. Reads
    /// wait for them at most `read_wait`.
    pub async fn start_without_projector(read_wait: Duration) -> Self {
        let mut api = Self::start_with_projector(Sync::Default, false, DEFAULT_CLUSTER_SILENCE).await;
        api.state = api.state.with_read_wait(read_wait);
        api.router = app(api.state.clone());
        api
    }

    /// The API checking commands against (and serving) `catalog` instead of the built-in one.
    pub async fn start_with_catalog(catalog: domain::Catalog) -> Self {
        let mut api = Self::start().await;
        api.state = api.state.with_catalog(std::sync::Arc::new(catalog));
        api.router = app(api.state.clone());
        api
    }

    /// The same server and projector, with requests served by `router` (an API built with other
    /// settings on the same server).
    pub fn with_router(mut api: Self, router: Router) -> Self {
        api.router = router;
        api
    }

    /// The same API, also authenticating JWTs from `oidc`'s issuer.
    pub fn with_oidc(mut self, oidc: api::auth::OidcVerifier) -> Self {
        self.state = self.state.with_oidc(oidc);
        self.router = app(self.state.clone());
        self
    }

    async fn start_with_projector(sync: Sync, projector: bool, silence: Duration) -> Self {
        let nats_server = NatsServer::start_with(sync);
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let nats = NatsServer::connect_options()
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => connected_tx.send_replace(true),
                        async_nats::Event::Disconnected => connected_tx.send_replace(false),
                        _ => return,
                    };
                }
            })
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
            .connect(nats_server.address())
            .await
            .expect("connect to the test nats-server");
        // The commit mode `./dev up` pairs with this sync policy.
        let commit_mode = match sync {
            Sync::Always => streams::CommitMode::Grouped,
            Sync::Default => streams::CommitMode::OneByOne,
        };
        let settings = streams::Settings { commit_mode, ..streams::Settings::default() };
        let state = AppState::start(nats.clone(), &settings)
            .await
            .expect("start the API state")
            .with_tokens(test_tokens());
        let projector_metrics = projections::ProjectorMetrics::default();
        if projector {
            // The projector runs beside the API, as `cp-projector run` does in a deployment.
            let topology =
                settings.apply(&async_nats::jetstream::new(nats)).await.expect("topology for the projector");
            let bucket = streams::read_models::ReadModelBucket::new(&topology);
            projections::Projector::new(topology.events, bucket, projector_metrics.clone())
                .parking_skipped(topology.jetstream.clone())
                .spawn();
        }
        for name in ["eu-1", "eu-2"] {
            let cluster = domain::Cluster { name: name.into(), region: "eu-central".into() };
            state.clusters.register(&cluster).await.expect("register cluster");
        }
        let intake_metrics = projections::intake::IntakeMetrics::default();
        if projector {
            // Agents' facts reach the event stream through their clusters' intakes, moved by the gate
            // `cp-projector run` runs beside the projector.
            tokio::spawn(projections::intake::run(
                async_nats::jetstream::new(state.nats.clone()),
                settings.clone(),
                state.clusters.clone(),
                projections::intake::IntakeLimits::default(),
                intake_metrics.clone(),
            ));
            let liveness = streams::liveness::LivenessBucket::open(
                &async_nats::jetstream::new(state.nats.clone()),
                &settings,
            )
            .await
            .expect("the liveness bucket");
            tokio::spawn(projections::liveness::watch(liveness, silence));
        }
        let router = app(state.clone());
        Self {
            nats_server,
            state,
            projector_metrics,
            intake_metrics,
            router,
            connected,
            agent_identities: Default::default(),
        }
    }

    /// The NATS identity of `cluster`'s agent, in an account of its own with only what
    /// `streams::accounts` imports for it (made at the first call, as an operator adds a cluster).
    pub fn agent_identity(&self, cluster: &str) -> testkit::NkeyUser {
        let mut identities = self.agent_identities.lock().expect("identities lock");
        identities
            .entry(cluster.to_owned())
            .or_insert_with(|| {
                let account = streams::accounts::agent_account(&streams::Settings::default(), cluster);
                self.nats_server.add_agent_account(&account.to_value())
            })
            .clone()
    }

    /// Waits, at most `timeout`, until the intake gate has moved every fact the registered clusters'
    /// intakes hold onto the event stream (`streams::intake`): what an agent had acknowledged is then in
    /// the stream. Returns whether it did.
    pub async fn intakes_moved(&self, timeout: Duration) -> bool {
        let jetstream = async_nats::jetstream::new(self.state.nats.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        for cluster in self.state.clusters.list() {
            let Ok(mut intake) = jetstream.get_stream(streams::intake::stream_name(&cluster.name)).await
            else {
                return false;
            };
            while intake.info().await.map(|i| i.state.messages).unwrap_or(u64::MAX) > 0 {
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        true
    }

    /// How many facts from clusters the projector refused for `reason` (`projections::facts`).
    pub fn refused_facts(&self, reason: &'static str) -> u64 {
        self.projector_metrics
            .refused_facts
            .get_or_create(&projections::projector::RefusalLabels { reason })
            .get()
    }

    /// Waits until the API's NATS client reports itself connected (`true`) or disconnected (`false`), at
    /// most `timeout`. Returns whether it did.
    pub async fn wait_for_connection(&self, connected: bool, timeout: Duration) -> bool {
        let mut state = self.connected.clone();
        tokio::time::timeout(timeout, state.wait_for(|c| *c == connected)).await.is_ok_and(|r| r.is_ok())
    }

    /// The `/metrics` page as text (it is not JSON, so [`Self::call`] would not keep it).
    pub async fn metrics_text(&self) -> String {
        let request = Request::get("/metrics").body(Body::empty()).expect("valid request");
        let response = self.router().oneshot(request).await.expect("infallible router");
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.expect("read body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("metrics are text")
    }

    /// Sends a request with optional JSON body and extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        call(&self.router, method, path, body, headers).await
    }

    /// GETs `path` as a client that made `writes` does: passing the newest write's `Cp-Stream-Sequence`
    /// back as `Cp-Min-Sequence`, so that the read shows those writes.
    pub async fn get_after<'a>(&self, path: &str, writes: impl IntoIterator<Item = &'a Reply>) -> Reply {
        let newest = writes
            .into_iter()
            .filter_map(|w| w.header("cp-stream-sequence")?.parse::<u64>().ok())
            .max()
            .expect("at least one write with a Cp-Stream-Sequence")
            .to_string();
        self.call(Method::GET, path, None, &[("cp-min-sequence", &newest)]).await
    }

    /// The router (for requests whose response is a stream).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        send(&self.router, request).await
    }

    /// Another API replica on this control plane's NATS, serving `state`.
    pub fn replica(&self, state: AppState) -> Replica {
        Replica { router: app(state) }
    }

    /// POSTs a PostgreSQL 16 instance called `name` in `project` and returns the reply.
    pub async fn provision(&self, project: &str, name: &str) -> Reply {
        let body = json!({"name": name, "service": "postgresql", "version": "16", "plan": "starter"});
        self.call(Method::POST, &format!("/v1/projects/{project}/instances"), Some(&body), &[]).await
    }

    /// Waits (at most `timeout`) until the read models show instance `id` of project acme in `state`.
    pub async fn wait_for_state(
        &self,
        id: uuid::Uuid,
        state: projections::Health,
        timeout: Duration,
    ) -> bool {
        self.state
            .read_models
            .wait_until(timeout, |m| m.instance("acme", id).is_some_and(|v| v.status.state == state))
            .await
    }

    /// Waits (at most `timeout`) until operation `id` of project acme is `in_progress`, `succeeded` or
    /// `failed`.
    pub async fn wait_for_operation(&self, id: uuid::Uuid, state: &str, timeout: Duration) -> bool {
        self.state
            .read_models
            .wait_until(timeout, |m| {
                m.operation("acme", id).is_some_and(|op| match op.state {
                    projections::OperationState::InProgress => state == "in_progress",
                    projections::OperationState::Succeeded => state == "succeeded",
                    projections::OperationState::Failed { .. } => state == "failed",
                })
            })
            .await
    }

    /// Number of messages the control plane itself stored: those on the instances' and backups' own
    /// subjects (`cp.evt.>`). Facts agents report (`cp.obs.>`) land in the same stream whenever a
    /// cluster observes something, so counting them would make "this request stored nothing" depend on
    /// an agent's timing.
    pub async fn stream_messages(&self) -> u64 {
        use futures::TryStreamExt as _;
        let subjects = self
            .state
            .events
            .info_with_subjects(streams::instances::desired_filter())
            .await
            .expect("stream info");
        subjects
            .try_fold(0, |sum, (_, count)| async move { Ok(sum + count as u64) })
            .await
            .expect("subject counts")
    }
}

/// A second API process's router (see [`TestApi::replica`]).
pub struct Replica {
    router: Router,
}

impl Replica {
    /// An API replica serving `state` (on NATS of the test's choosing).
    pub fn new(state: AppState) -> Self {
        Self { router: app(state) }
    }

    /// Sends a request with optional JSON body and extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        call(&self.router, method, path, body, headers).await
    }
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(serde_json::to_vec(json).expect("serialize body"))
        }
        None => Body::empty(),
    };
    send(router, request.body(body).expect("valid request")).await
}

async fn send(router: &Router, mut request: Request<Body>) -> Reply {
    // A request that says nothing about authentication goes as the platform admin; a test of
    // authentication sets its own header (an empty one for none).
    if !request.headers().contains_key("authorization") {
        let admin = format!("Bearer {ADMIN_TOKEN}");
        request.headers_mut().insert("authorization", admin.parse().expect("a header value"));
    }
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("read body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body }
}

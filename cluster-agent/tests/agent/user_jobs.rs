//! The users Job of an InfluxDB instance (`render::user_tokens`), its script run under `sh` with the real
//! curl against two fakes: InfluxDB 2.7, whose rules come from its handlers, and the Kubernetes API
//! server's Secret PATCH, which checks the bearer token and the Role's `resourceNames` as RBAC would.
//! The Secrets the fake API server holds are what the kubelet would hand the next run in its environment.
//!
//! InfluxDB v2.7.12 rules:
//! - every route but `POST /api/v2/signin` needs a session or a token (`http/authentication_middleware.go`,
//!   `ProbeAuthScheme`): 401 otherwise; signin with the admin's Basic credentials answers 204 and sets
//!   `influxdb-oss-session` (`session/http_server.go`);
//! - `GET /api/v2/buckets?org=&name=` (`tenant/http_server_bucket.go`): 404 for an organization name
//!   that does not exist, the matching buckets (with `id` and `orgID`) otherwise;
//! - `POST /api/v2/authorizations` (`authorization/http_server.go`, `Validate`; `authorization/service.go`,
//!   `CreateAuthorization`): 400 without permissions, without `orgID`, or for an organization that does
//!   not exist; 201 with `id` and `token`. A permission's bucket must be one of the organization's;
//! - `DELETE /api/v2/authorizations/{id}`: 204, 404 when there is none; the router answers 405 to a verb
//!   a route does not have (chi's `MethodNotAllowed`).
//!
//! Kubernetes: `PATCH /api/v1/namespaces/{ns}/secrets/{name}` with a merge patch; 401 without the
//! account's bearer token, 403 for a name the Role does not list or a verb it does not grant
//! (RBAC: `resourceNames` restrict `get`/`patch` by name).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, delete, post},
};
use base64::Engine as _;
use cluster_agent::{
    crd::UserTarget,
    render::{
        user_tokens::{TokenUser, job, role},
        users::secret_name,
    },
};
use serde_json::{Value, json};

use crate::{
    common::{Backend, View, World},
    fixture,
};

pub(crate) const ADMIN_PASSWORD: &str = "admin-pass-1";
const ORG_ID: &str = "0f00000000000001";
const BUCKET_ID: &str = "0b00000000000001";
pub(crate) const BEARER: &str = "sa-token-of-the-users-job";

pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
    String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.into(), p.into()))
}

#[derive(Default)]
struct Influx {
    sessions: Mutex<HashSet<String>>,
    /// id → (token, description, permissions)
    authorizations: Mutex<BTreeMap<String, (String, String, Value)>>,
    refused: Mutex<Vec<String>>,
    next: Mutex<u64>,
    /// listing the authorizations answers 500 (an InfluxDB whose store is away)
    listing_fails: std::sync::atomic::AtomicBool,
}

impl Influx {
    fn session(&self, headers: &HeaderMap) -> bool {
        let sessions = self.sessions.lock().unwrap();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|c| c.split(';'))
            .any(|c| c.trim().strip_prefix("influxdb-oss-session=").is_some_and(|t| sessions.contains(t)))
    }

    fn refuse(&self, status: StatusCode, why: &str) -> Response {
        self.refused.lock().unwrap().push(why.to_owned());
        (status, axum::Json(json!({"code": status.as_str(), "message": why}))).into_response()
    }
}

/// JSON as InfluxDB's `kit/transport/http/api.go` `Respond` writes it: `json.MarshalIndent(v, "", "\t")`.
fn tabbed(value: &Value) -> String {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"\t"),
    );
    value.serialize(&mut serializer).unwrap();
    String::from_utf8(out).unwrap()
}

/// An `authResponse` (`authorization/http_server.go`) as InfluxDB writes it: its fields in the struct's
/// order (`id`, `token`, `status`, `description`, `orgID`, `org`, `userID`, `user`, `permissions`,
/// `links`), tab-indented (`kit/transport/http/api.go`); the permissions' resources carry ids of their own.
fn auth_response(id: &str, token: &str, description: &str, permissions: &Value) -> String {
    let permissions: Vec<String> = permissions
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{{\"action\": {}, \"resource\": {{\"type\": \"buckets\", \"id\": {}, \"orgID\": {}, \"name\": \"default\", \"org\": \"acme\"}}}}",
                p["action"], p["resource"]["id"], p["resource"]["orgID"]
            )
        })
        .collect();
    format!(
        "{{\n\t\"id\": \"{id}\",\n\t\"token\": \"{token}\",\n\t\"status\": \"active\",\n\t\"description\": {description},\n\t\"orgID\": \"{ORG_ID}\",\n\t\"org\": \"acme\",\n\t\"userID\": \"0c00000000000001\",\n\t\"user\": \"admin\",\n\t\"permissions\": [{}],\n\t\"links\": {{\"self\": \"/api/v2/authorizations/{id}\"}}\n}}",
        permissions.join(", "),
        description = Value::from(description),
    )
}

fn influx_router(influx: Arc<Influx>) -> Router {
    Router::new()
        .route(
            "/api/v2/signin",
            post(|State(s): State<Arc<Influx>>, headers: HeaderMap| async move {
                match basic(&headers) {
                    Some((user, password)) if user == "admin" && password == ADMIN_PASSWORD => {
                        let token = uuid::Uuid::new_v4().simple().to_string();
                        s.sessions.lock().unwrap().insert(token.clone());
                        let cookie = format!("influxdb-oss-session={token}; Path=/api/; HttpOnly");
                        (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
                    }
                    _ => s.refuse(StatusCode::UNAUTHORIZED, "signin: wrong credentials"),
                }
            }),
        )
        .route(
            "/api/v2/buckets",
            any(
                |State(s): State<Arc<Influx>>,
                 method: Method,
                 headers: HeaderMap,
                 Query(q): Query<BTreeMap<String, String>>| async move {
                    if !s.session(&headers) {
                        return s.refuse(StatusCode::UNAUTHORIZED, "buckets without a session or token");
                    }
                    if method != Method::GET {
                        return s.refuse(StatusCode::METHOD_NOT_ALLOWED, "buckets: not a GET");
                    }
                    if q.get("org").is_some_and(|o| o != "acme") {
                        return s.refuse(StatusCode::NOT_FOUND, "organization name not found");
                    }
                    let buckets = if q.get("name").is_none_or(|n| n == "default") {
                        // InfluxDB's own layout: tab-indented, links first (kit/transport/http/api.go).
                        vec![json!({"links": {"self": format!("/api/v2/buckets/{BUCKET_ID}")},
                                    "id": BUCKET_ID, "orgID": ORG_ID, "type": "user", "name": "default"})]
                    } else {
                        vec![]
                    };
                    let body = tabbed(&json!({"links": {"self": "/api/v2/buckets"}, "buckets": buckets}));
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
                },
            ),
        )
        .route(
            "/api/v2/authorizations",
            any(|State(s): State<Arc<Influx>>,
                 method: Method,
                 headers: HeaderMap,
                 Query(q): Query<BTreeMap<String, String>>,
                 body: String| async move {
                if !s.session(&headers) {
                    return s.refuse(StatusCode::UNAUTHORIZED, "authorizations without a session or token");
                }
                if method == Method::GET && s.listing_fails.load(std::sync::atomic::Ordering::SeqCst) {
                    return s.refuse(StatusCode::INTERNAL_SERVER_ERROR, "listing authorizations failed");
                }
                if method == Method::GET {
                    // `handleGetAuthorizations`: the org's authorizations, in `authsResponse`.
                    if q.get("orgID").is_some_and(|o| o != ORG_ID) {
                        return s.refuse(StatusCode::NOT_FOUND, "organization not found");
                    }
                    let listed: Vec<String> = s
                        .authorizations
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(id, (token, description, permissions))| auth_response(id, token, description, permissions))
                        .collect();
                    let body = format!(
                        "{{\n\t\"links\": {{\n\t\t\"self\": \"/api/v2/authorizations\"\n\t}},\n\t\"authorizations\": [{}]\n}}",
                        listed.join(",")
                    );
                    return (StatusCode::OK, body).into_response();
                }
                if method != Method::POST {
                    return s.refuse(StatusCode::METHOD_NOT_ALLOWED, "authorizations: not a POST");
                }
                let Ok(body) = serde_json::from_str::<Value>(&body) else {
                    return s.refuse(StatusCode::BAD_REQUEST, "invalid json structure");
                };
                let permissions = body["permissions"].as_array().cloned().unwrap_or_default();
                if permissions.is_empty() {
                    return s.refuse(StatusCode::BAD_REQUEST, "authorization must include permissions");
                }
                match body["orgID"].as_str() {
                    None | Some("") => return s.refuse(StatusCode::BAD_REQUEST, "org id required"),
                    Some(ORG_ID) => {}
                    Some(_) => return s.refuse(StatusCode::BAD_REQUEST, "unable to create token"),
                }
                for p in &permissions {
                    let r = &p["resource"];
                    let known_action = p["action"] == "read" || p["action"] == "write";
                    if !known_action || r["type"] != "buckets" || r["id"] != BUCKET_ID || r["orgID"] != ORG_ID {
                        return s.refuse(StatusCode::BAD_REQUEST, &format!("permission not on the bucket: {p}"));
                    }
                }
                let mut next = s.next.lock().unwrap();
                *next += 1;
                let id = format!("0a{:014x}", *next);
                let token = format!("tok{}==", uuid::Uuid::new_v4().simple());
                let description = body["description"].as_str().unwrap_or_default().to_owned();
                s.authorizations
                    .lock()
                    .unwrap()
                    .insert(id.clone(), (token.clone(), description.clone(), json!(permissions)));
                (StatusCode::CREATED, auth_response(&id, &token, &description, &json!(permissions))).into_response()
            }),
        )
        .route(
            "/api/v2/authorizations/{id}",
            delete(|State(s): State<Arc<Influx>>, Path(id): Path<String>, headers: HeaderMap| async move {
                if !s.session(&headers) {
                    return s.refuse(StatusCode::UNAUTHORIZED, "DELETE authorization without a session");
                }
                match s.authorizations.lock().unwrap().remove(&id) {
                    Some(_) => StatusCode::NO_CONTENT.into_response(),
                    None => (StatusCode::NOT_FOUND, "authorization not found").into_response(),
                }
            })
            .fallback(|State(s): State<Arc<Influx>>| async move {
                s.refuse(StatusCode::METHOD_NOT_ALLOWED, "authorizations/{id}: not a DELETE")
            }),
        )
        .fallback(|State(s): State<Arc<Influx>>| async move {
            s.refuse(StatusCode::NOT_FOUND, "a route the users Job should not use")
        })
        .with_state(influx)
}

/// A Secret as the fake API server keeps it: its annotations and its data.
pub(crate) type StoredSecret = (Value, BTreeMap<String, String>);

/// The API server's Secrets of the namespace, as far as the users Job sees them.
pub(crate) struct Kube {
    pub(crate) namespace: String,
    /// the names the Role lets the account `get` and `patch`
    pub(crate) allowed: Vec<String>,
    /// name → (annotations, data)
    pub(crate) secrets: Mutex<BTreeMap<String, StoredSecret>>,
    pub(crate) refused: Mutex<Vec<String>>,
}

impl Kube {
    /// A fake API server holding the (empty) Secrets `secrets`, whose Role lets the Job's account at `allowed`.
    pub(crate) async fn start(secrets: &[String], allowed: Vec<String>) -> (Arc<Self>, std::net::SocketAddr) {
        let kube = Arc::new(Kube {
            namespace: "cp-acme".into(),
            allowed,
            secrets: Mutex::new(secrets.iter().map(|s| (s.clone(), (json!({}), BTreeMap::new()))).collect()),
            refused: Mutex::default(),
        });
        let address = serve(kube_router(kube.clone())).await;
        (kube, address)
    }

    /// The value at `key` of Secret `secret`.
    pub(crate) fn value(&self, secret: &str, key: &str) -> Option<String> {
        self.secrets.lock().unwrap().get(secret).and_then(|(_, d)| d.get(key).cloned())
    }
}

fn kube_router(kube: Arc<Kube>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            any(
                |State(k): State<Arc<Kube>>,
                 method: Method,
                 Path((namespace, name)): Path<(String, String)>,
                 headers: HeaderMap,
                 body: String| async move {
                    let refuse = |status: StatusCode, why: String| {
                        k.refused.lock().unwrap().push(why.clone());
                        (status, why).into_response()
                    };
                    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    if bearer != Some(&format!("Bearer {BEARER}")) {
                        return refuse(
                            StatusCode::UNAUTHORIZED,
                            format!("{method} {name}: not the account's token"),
                        );
                    }
                    if namespace != k.namespace || !k.allowed.contains(&name) || method != Method::PATCH {
                        return refuse(
                            StatusCode::FORBIDDEN,
                            format!("{method} {namespace}/{name}: forbidden"),
                        );
                    }
                    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                    if content_type != Some("application/merge-patch+json") {
                        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{content_type:?}"));
                    }
                    let patch: Value = serde_json::from_str(&body).expect("a JSON merge patch");
                    let mut secrets = k.secrets.lock().unwrap();
                    let Some((annotations, data)) = secrets.get_mut(&name) else {
                        return refuse(StatusCode::NOT_FOUND, format!("secret {name} not found"));
                    };
                    for (key, value) in patch["metadata"]["annotations"].as_object().into_iter().flatten() {
                        annotations[key] = value.clone();
                    }
                    for (key, value) in patch["stringData"].as_object().into_iter().flatten() {
                        data.insert(key.clone(), value.as_str().unwrap().to_owned());
                    }
                    StatusCode::OK.into_response()
                },
            ),
        )
        .with_state(kube)
}

pub(crate) async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

/// Replaces the shell assignment `name='…'` in `script` by `name='value'`.
fn assign(script: &str, name: &str, value: &str) -> String {
    let start = script.find(&format!("{name}='")).unwrap_or_else(|| panic!("{name}= in the script"));
    let end = start + script[start..].find("'\n").expect("its end");
    format!("{}{name}='{value}'{}", &script[..start], &script[end + 1..])
}

struct Setup {
    influx: Arc<Influx>,
    kube: Arc<Kube>,
    influx_address: std::net::SocketAddr,
    kube_address: std::net::SocketAddr,
}

impl Setup {
    async fn new(secrets: &[String], allowed: Vec<String>) -> Self {
        let influx = Arc::new(Influx::default());
        let (kube, kube_address) = Kube::start(secrets, allowed).await;
        let influx_address = serve(influx_router(influx.clone())).await;
        Self { influx, kube, influx_address, kube_address }
    }

    fn value(&self, secret: &str, key: &str) -> Option<String> {
        self.kube.value(secret, key)
    }

    /// Runs the Job's script as its pod would: the environment from the Secrets as the fake API server
    /// holds them (an optional key missing: unset), the account's token and CA in a directory of its own.
    async fn run(&self, job: &Value, bearer: &str) -> (bool, String) {
        run_job(job, self.influx_address, &self.kube, self.kube_address, bearer).await
    }
}

/// Runs a users Job's script as its pod would, against the service at `service` and the fake API server
/// `kube`: the environment from the Secrets as `kube` holds them (an optional key missing: unset), the
/// account's token and CA in a directory of its own.
pub(crate) async fn run_job(
    job: &Value,
    service: std::net::SocketAddr,
    kube: &Kube,
    kube_address: std::net::SocketAddr,
    bearer: &str,
) -> (bool, String) {
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let tmp = std::env::temp_dir().join(format!("cp-users-{}", uuid::Uuid::new_v4().simple()));
    let sa = tmp.join("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), bearer).unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let script = container["command"][2].as_str().expect("a /bin/sh -c script");
    // The pod's own scratch files first: the account's directory given below lies under /tmp too.
    let script = script.replace("/tmp/", &format!("{}/", tmp.display()));
    let script = assign(&script, "base", &format!("http://{service}"));
    let script = assign(&script, "api", &format!("http://{kube_address}"));
    let script = assign(&script, "sa", &sa.display().to_string());
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(&script).env_clear().env("PATH", std::env::var("PATH").unwrap());
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let reference = &e["valueFrom"]["secretKeyRef"];
        let value = match reference["name"].as_str() {
            Some(secret) if secret.ends_with("-credentials") => Some(ADMIN_PASSWORD.to_owned()),
            Some(secret) => {
                let value = kube.value(secret, reference["key"].as_str().unwrap());
                assert!(
                    value.is_some() || reference["optional"] == true,
                    "{name} would keep the pod from starting"
                );
                value
            }
            None => e["value"].as_str().map(str::to_owned),
        };
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let output = command.output().await.expect("sh runs");
    let _ = std::fs::remove_dir_all(&tmp);
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn user(name: &str, role: &str, generation: u64) -> UserTarget {
    UserTarget { name: name.into(), role: role.into(), generation }
}

fn influx_instance(users: Vec<UserTarget>) -> cluster_agent::crd::ManagedInstance {
    let mut mi = fixture::instance("influxdb", "2.7", json!({}));
    mi.spec.users = users;
    mi
}

fn render_job(
    mi: &cluster_agent::crd::ManagedInstance,
    generation: u64,
    renew: &[bool],
    revoked: &[(String, String)],
) -> Value {
    let users: Vec<TokenUser> =
        mi.spec.users.iter().zip(renew).map(|(user, renew)| TokenUser { user, renew: *renew }).collect();
    job(mi, generation, &users, revoked).object
}

fn role_names(mi: &cluster_agent::crd::ManagedInstance, secrets: &[String]) -> Vec<String> {
    let role = role(mi, secrets);
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "patch"]));
    serde_json::from_value(role["rules"][0]["resourceNames"].clone()).unwrap()
}

#[tokio::test]
async fn the_influxdb_users_job_makes_tokens_on_the_bucket_into_the_users_secrets_only() {
    let mi = influx_instance(vec![user("ingest", "write", 7), user("dash", "read", 8)]);
    let secrets = [secret_name("orders", "ingest"), secret_name("orders", "dash")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let job = render_job(&mi, 8, &[true, true], &[]);
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(!script.contains(BEARER) && !script.contains(ADMIN_PASSWORD));

    let (ok, stderr) = setup.run(&job, BEARER).await;
    assert!(ok, "{stderr}; influx refused {:?}; kube refused {:?}", setup.influx.refused, setup.kube.refused);
    let authorizations = setup.influx.authorizations.lock().unwrap().clone();
    assert_eq!(authorizations.len(), 2, "{authorizations:?}");
    for (secret, actions) in [(&secrets[0], vec!["read", "write"]), (&secrets[1], vec!["read"])] {
        let id = setup.value(secret, "id").expect("the authorization's id in the Secret");
        let token = setup.value(secret, "password").expect("the token in the Secret");
        let (kept, _, permissions) = &authorizations[&id];
        assert_eq!(kept, &token, "the Secret holds the token InfluxDB made");
        let granted: Vec<&str> =
            permissions.as_array().unwrap().iter().map(|p| p["action"].as_str().unwrap()).collect();
        assert_eq!(granted, actions, "{secret}");
        for p in permissions.as_array().unwrap() {
            assert_eq!(p["resource"], json!({"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}));
        }
    }
    assert_eq!(setup.kube.secrets.lock().unwrap()[&secrets[0]].0["cp.example.com/password-generation"], "7");

    // Run again with the tokens kept (a retried Job): nothing new.
    let (ok, stderr) = setup.run(&render_job(&mi, 8, &[false, false], &[]), BEARER).await;
    assert!(ok, "{stderr}");
    assert_eq!(*setup.influx.authorizations.lock().unwrap(), authorizations, "no new authorization");
}

#[tokio::test]
async fn a_rotation_replaces_the_token_and_a_deletion_revokes_it_even_when_already_gone() {
    let mi = influx_instance(vec![user("ingest", "write", 7)]);
    let secrets = [secret_name("orders", "ingest")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let (ok, stderr) = setup.run(&render_job(&mi, 7, &[true], &[]), BEARER).await;
    assert!(ok, "{stderr}");
    let (old_id, old_token) =
        (setup.value(&secrets[0], "id").unwrap(), setup.value(&secrets[0], "password").unwrap());

    let mi = influx_instance(vec![user("ingest", "write", 9)]);
    let (ok, stderr) = setup.run(&render_job(&mi, 9, &[true], &[]), BEARER).await;
    assert!(ok, "{stderr}");
    let (id, token) =
        (setup.value(&secrets[0], "id").unwrap(), setup.value(&secrets[0], "password").unwrap());
    assert_ne!(token, old_token, "a new token");
    let authorizations = setup.influx.authorizations.lock().unwrap().clone();
    assert!(authorizations.contains_key(&id) && !authorizations.contains_key(&old_id), "the old one revoked");
    assert_eq!(setup.kube.secrets.lock().unwrap()[&secrets[0]].0["cp.example.com/password-generation"], "9");

    // Deleted: its authorization goes; a rerun after it went (404) still succeeds.
    let mi = influx_instance(vec![]);
    for _ in 0..2 {
        let revoked = [(secrets[0].clone(), "ingest".to_owned())];
        let (ok, stderr) = setup.run(&render_job(&mi, 10, &[], &revoked), BEARER).await;
        assert!(ok, "{stderr}");
        assert!(setup.influx.authorizations.lock().unwrap().is_empty(), "revoked for real");
    }
}

#[tokio::test]
async fn without_the_account_s_token_or_outside_the_role_s_names_the_token_is_not_handed_over() {
    let mi = influx_instance(vec![user("ingest", "write", 7)]);
    let secrets = [secret_name("orders", "ingest")];
    // A wrong bearer token: the API server's 401 fails the Job.
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let (ok, stderr) = setup.run(&render_job(&mi, 7, &[true], &[]), "someone-else").await;
    assert!(!ok, "the Job fails when the token cannot be written");
    assert!(stderr.contains("writing the token of user ingest"), "{stderr}");
    assert!(setup.kube.refused.lock().unwrap()[0].contains("not the account's token"));
    // A Role naming other Secrets: 403.
    let setup = Setup::new(&secrets, role_names(&mi, &[secret_name("orders", "other")])).await;
    let (ok, _) = setup.run(&render_job(&mi, 7, &[true], &[]), BEARER).await;
    assert!(!ok);
    assert!(setup.kube.refused.lock().unwrap()[0].contains("forbidden"), "{:?}", setup.kube.refused);
}

#[tokio::test]
async fn influxdb_refuses_what_the_job_no_longer_does() {
    let mi = influx_instance(vec![user("ingest", "write", 7)]);
    let secrets = [secret_name("orders", "ingest")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let job = render_job(&mi, 7, &[true], &[]);
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    let with = |from: &str, to: &str| {
        assert!(script.contains(from), "{from} in the script");
        let mut job = job.clone();
        job["spec"]["template"]["spec"]["containers"][0]["command"][2] = json!(script.replace(from, to));
        job
    };
    let refused = |setup: &Setup| setup.influx.refused.lock().unwrap().clone();
    // No session: 401.
    let (ok, _) = setup.run(&with("-b /tmp/session -X POST", "-X POST"), BEARER).await;
    assert!(!ok);
    assert!(
        refused(&setup).iter().any(|r| r == "authorizations without a session or token"),
        "{:?}",
        refused(&setup)
    );
    // Another organization's name: 404, and the Job fails naming the bucket.
    let (ok, stderr) = setup.run(&with("org=acme&", "org=other&"), BEARER).await;
    assert!(!ok && stderr.contains("bucket default of organization acme not found"), "{stderr}");
    // Without the organization's id: 400.
    let (ok, _) = setup.run(&with("{\"orgID\":\"%s\"", "{\"orgID\":\"\",\"x\":\"%s\""), BEARER).await;
    assert!(!ok);
    assert!(refused(&setup).iter().any(|r| r == "org id required"));
    // A PUT where a POST is due: 405.
    let (ok, _) = setup
        .run(
            &with(
                "-X POST -H 'Content-Type: application/json'",
                "-X PUT -H 'Content-Type: application/json'",
            ),
            BEARER,
        )
        .await;
    assert!(!ok);
    assert!(refused(&setup).iter().any(|r| r == "authorizations: not a POST"));
    assert!(setup.influx.authorizations.lock().unwrap().is_empty(), "nothing made");
    assert_eq!(setup.value(&secrets[0], "password"), None, "no token handed over");
}

#[test]
fn the_users_job_passes_pod_security_restricted_and_is_admitted_as_the_instance_s_client() {
    let mi = influx_instance(vec![user("ingest", "write", 7)]);
    let job = render_job(&mi, 7, &[true], &[]);
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"][cluster_agent::render::job::CLIENT_OF_LABEL], mi.spec.instance_id);
    assert_eq!(pod["spec"]["serviceAccountName"], "orders-users");
    let context = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(context["runAsNonRoot"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
}

/// On both backends: an InfluxDB user's Secret is made without a token, the Job that asks InfluxDB for
/// one runs as an account whose Role reaches that Secret only, the user is applied once the Job
/// completed, and a deletion is another Job revoking the authorization, after which the Secret goes.
async fn influxdb_users_are_tokens_handed_over_by_a_job_with_an_account_of_its_own(backend: Backend) {
    use domain::{InstanceCommand, ServiceType};
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    cluster.converges("provisioned", |v| v.ready_at("influx", 1)).await;
    let applied = |v: &View| v.managed_instance("influx")?["status"]["applied"]["users"].as_u64();
    let secret = "influx.user.ingest";

    let created =
        world.command(id, InstanceCommand::CreateUser { name: "ingest".into(), role: "write".into() }).await;
    let job_name = format!("influx-users-{created}");
    cluster.converges("the users Job", |v| v.get("jobs.batch", &job_name).is_some()).await;
    let view = cluster.view().await;
    let made = view.get("secrets", secret).expect("the user's Secret, made before the Job");
    assert_eq!(made["metadata"]["labels"]["cp.example.com/user"], "ingest");
    assert!(
        made["data"]["password"].is_null() && made["stringData"]["password"].is_null(),
        "no token yet: {made}"
    );
    let account = view.get("serviceaccounts", "influx-users").expect("the Job's own account");
    assert_eq!(account["metadata"]["labels"]["cp.example.com/instance-id"], id.to_string());
    let role = view.get("roles.rbac.authorization.k8s.io", "influx-users").expect("its Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "patch"]}])
    );
    let binding = view.get("rolebindings.rbac.authorization.k8s.io", "influx-users").expect("its binding");
    assert_eq!(binding["roleRef"]["name"], "influx-users");
    assert_eq!(binding["subjects"][0]["name"], "influx-users");
    let job = view.get("jobs.batch", &job_name).unwrap();
    let pod = &job["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], "influx-users");
    assert_eq!(pod["metadata"]["labels"]["cp.example.com/writes-user-secrets"], id.to_string());
    assert_eq!(pod["metadata"]["labels"]["cp.example.com/client-of"], id.to_string());
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    let token_ref = env.iter().find(|e| e["name"] == "TOKEN_ID_0").expect("the authorization id's reference");
    assert_eq!(
        token_ref["valueFrom"]["secretKeyRef"],
        json!({"name": secret, "key": "id", "optional": true})
    );
    cluster.converges("the user applied", |v| applied(v) == Some(created)).await;
    if cluster.kube.is_sim() {
        // The simulator plays the Job's hand-over: the token and its id in the Secret, not in the status.
        let view = cluster.view().await;
        let data = &view.get("secrets", secret).unwrap()["data"];
        let decode = |v: &Value| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
            String::from_utf8(bytes).ok()
        };
        let token = decode(&data["password"]).unwrap_or_else(|| panic!("the token handed over: {data}"));
        assert!(decode(&data["id"]).is_some(), "{data}");
        assert!(!view.managed_instance("influx").unwrap().to_string().contains(&token));
    }
    cluster
        .converges("the Job and its account gone", |v| {
            v.get("jobs.batch", &job_name).is_none() && v.get("serviceaccounts", "influx-users").is_none()
        })
        .await;
    assert_eq!(
        cluster.view().await.managed_instance("influx").unwrap()["status"]["users"],
        json!([{"name": "ingest", "generation": created}])
    );

    let deleted = world.command(id, InstanceCommand::DeleteUser { name: "ingest".into() }).await;
    let revoke_job = format!("influx-users-{deleted}");
    cluster.converges("the revoking Job", |v| v.get("jobs.batch", &revoke_job).is_some()).await;
    let view = cluster.view().await;
    assert!(view.get("secrets", secret).is_some(), "the Secret stays while its authorization is revoked");
    let job = view.get("jobs.batch", &revoke_job).unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array().unwrap().iter().any(|e| e["name"] == "REVOKED_ID_0"
            && e["valueFrom"]["secretKeyRef"] == json!({"name": secret, "key": "id", "optional": true})),
        "{env}"
    );
    cluster.converges("the user revoked", |v| applied(v) == Some(deleted)).await;
    cluster.converges("the Secret gone", |v| v.get("secrets", secret).is_none()).await;
}
on_both_backends!(influxdb_users_are_tokens_handed_over_by_a_job_with_an_account_of_its_own);

/// A users Job that fails (its pod exits non-zero until the backoff limit, as the simulator's fault
/// makes it) fails the users with the Job's reason, and the users stay unapplied.
#[tokio::test]
async fn a_failed_influxdb_users_job_fails_the_users_with_its_reason() {
    use domain::{InstanceCommand, ServiceType};
    let world = World::start(Backend::Sim, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    cluster.converges("provisioned", |v| v.ready_at("influx", 1)).await;
    cluster
        .kube
        .sim()
        .set_faults(k8s_sim::server::Faults { failing_jobs: vec!["*".into()], ..Default::default() });
    let created =
        world.command(id, InstanceCommand::CreateUser { name: "ingest".into(), role: "read".into() }).await;
    let reason =
        |v: &View| v.managed_instance("influx")?["status"]["users"][0]["reason"].as_str().map(str::to_owned);
    cluster.converges("the Job's failure reported", |v| reason(v).is_some()).await;
    let view = cluster.view().await;
    assert_eq!(reason(&view).as_deref(), Some("Job has reached the specified backoff limit"));
    let mi = view.managed_instance("influx").unwrap();
    assert_ne!(mi["status"]["applied"]["users"].as_u64(), Some(created), "not applied: {mi}");
    assert_eq!(mi["status"]["users"][0]["generation"], 0);
    assert!(mi.to_string().contains("UsersNotApplied: Job has reached the specified backoff limit"), "{mi}");
}

/// A user deleted while the Job making its token still runs: the revoking Job waits for that one to end,
/// so it reads the authorization id the first handed over (two Jobs never race on one user's token).
/// On the simulator, whose Jobs take the ready delay to finish.
#[tokio::test]
async fn the_next_users_job_waits_for_the_one_still_running() {
    use domain::{InstanceCommand, ServiceType};
    let world = World::start_with(Backend::Sim, &["c1"], Duration::from_secs(2)).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "influx", ServiceType::Influxdb, "2.7").await;
    cluster.converges("provisioned", |v| v.ready_at("influx", 1)).await;
    let created =
        world.command(id, InstanceCommand::CreateUser { name: "ingest".into(), role: "read".into() }).await;
    let first = format!("influx-users-{created}");
    cluster.converges("the first Job", |v| v.get("jobs.batch", &first).is_some()).await;
    let deleted = world.command(id, InstanceCommand::DeleteUser { name: "ingest".into() }).await;
    let second = format!("influx-users-{deleted}");
    let done = |v: &View| {
        v.get("jobs.batch", &first).is_none_or(|j| cluster_agent::render::job::outcome(j).is_some())
    };
    // Every state of the cluster until the first Job ends, looked at after each change (no polling):
    // none may hold the second Job while the first still runs.
    let looks = std::sync::atomic::AtomicUsize::new(0);
    let overlapped = std::sync::atomic::AtomicBool::new(false);
    let ended = cluster
        .wait_until(Duration::from_secs(30), |view| {
            looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if view.get("jobs.batch", &second).is_some() && !done(view) {
                overlapped.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            done(view)
        })
        .await;
    assert!(!overlapped.into_inner(), "the revoking Job started while the first still ran");
    assert!(ended, "the first Job never ended");
    assert!(looks.into_inner() > 1, "the first Job was seen running");
    cluster
        .converges("the user revoked", |v| {
            v.managed_instance("influx").and_then(|mi| mi["status"]["applied"]["users"].as_u64())
                == Some(deleted)
        })
        .await;
}

/// An authorization an earlier run made but never handed over (its Job ended between InfluxDB's answer
/// and the PATCH) is revoked when the user is granted again; other users' and others' authorizations stay.
#[tokio::test]
async fn an_authorization_never_handed_over_is_revoked_by_the_next_grant() {
    let mi = influx_instance(vec![user("ingest", "write", 7)]);
    let secrets = [secret_name("orders", "ingest")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let bucket =
        json!([{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]);
    {
        let mut authorizations = setup.influx.authorizations.lock().unwrap();
        authorizations
            .insert("0aff000000000001".into(), ("orphan==".into(), "cp user ingest".into(), bucket.clone()));
        authorizations.insert(
            "0aff000000000002".into(),
            ("other==".into(), "cp user ingest_old".into(), bucket.clone()),
        );
        authorizations
            .insert("0aff000000000003".into(), ("mine==".into(), "a token of the tenant's".into(), bucket));
    }
    let (ok, stderr) = setup.run(&render_job(&mi, 7, &[true], &[]), BEARER).await;
    assert!(ok, "{stderr}; refused {:?}", setup.influx.refused);
    let id = setup.value(&secrets[0], "id").unwrap();
    let left: Vec<String> = setup.influx.authorizations.lock().unwrap().keys().cloned().collect();
    let mut expected = vec!["0aff000000000002".to_owned(), "0aff000000000003".to_owned(), id];
    expected.sort();
    assert_eq!(left, expected, "the orphan revoked, nothing else");
}

/// A user deleted whose Secret never got its authorization's id (the run that made it died before the
/// hand-over): the revoking Job finds the authorization by its description and revokes it.
#[tokio::test]
async fn a_deleted_user_s_authorization_is_revoked_even_when_its_id_never_reached_the_secret() {
    let mi = influx_instance(vec![]);
    let secrets = [secret_name("orders", "gone")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let bucket =
        json!([{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]);
    {
        let mut authorizations = setup.influx.authorizations.lock().unwrap();
        authorizations
            .insert("0aff000000000001".into(), ("orphan==".into(), "cp user gone".into(), bucket.clone()));
        authorizations
            .insert("0aff000000000003".into(), ("mine==".into(), "a token of the tenant's".into(), bucket));
    }
    let revoked = [(secrets[0].clone(), "gone".to_owned())];
    let (ok, stderr) = setup.run(&render_job(&mi, 9, &[], &revoked), BEARER).await;
    assert!(ok, "{stderr}; refused {:?}", setup.influx.refused);
    let left: Vec<String> = setup.influx.authorizations.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, ["0aff000000000003"], "the deleted user's authorization revoked, nothing else");
}

/// The same deletion while InfluxDB cannot list its authorizations: the Job fails saying so, rather than
/// revoking nothing and succeeding (the images' `sh` has no `pipefail`, so the listing's failure must not
/// be lost on the left of a pipe).
#[tokio::test]
async fn a_deleted_user_s_revocation_fails_the_job_when_the_authorizations_cannot_be_listed() {
    let mi = influx_instance(vec![]);
    let secrets = [secret_name("orders", "gone")];
    let setup = Setup::new(&secrets, role_names(&mi, &secrets)).await;
    let bucket =
        json!([{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]);
    setup
        .influx
        .authorizations
        .lock()
        .unwrap()
        .insert("0aff000000000001".into(), ("orphan==".into(), "cp user gone".into(), bucket));
    setup.influx.listing_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let revoked = [(secrets[0].clone(), "gone".to_owned())];
    let (ok, stderr) = setup.run(&render_job(&mi, 9, &[], &revoked), BEARER).await;
    assert!(!ok && stderr.contains("listing the authorizations of user gone failed"), "{stderr}");
}

//! An InfluxDB 2.7 fake for the backup and restore Jobs: the routes they use, with the rules of the
//! upstream handlers (influxdata/influxdb v2.7.12), recording every request so a test can tell what
//! was asked and with which credentials.
//!
//! - `http/platform_handler.go` `RegisterNoAuthRoute`: `POST /api/v2/signin` (and setup) need nothing;
//!   `/health` is served outside the API. Everything else goes through `http/authentication_middleware.go`:
//!   `ProbeAuthScheme` takes a `Token`/`Bearer` `Authorization` header (`http/tokens.go`) or the session
//!   cookie, else 401.
//! - `session/http_server.go`: Basic credentials on `POST /api/v2/signin` → 204 and the session cookie.
//! - `authorization/http_server.go` `handleGetAuthorizations`: `?user=` filters by user name; each
//!   authorization carries its `token`; responses are `json.MarshalIndent(v, "", "\t")`
//!   (`kit/transport/http/api.go`, `prettyJSON` on by default).
//! - `tenant/http_server_bucket.go` (where v2.7 serves `/api/v2/buckets`; `http/bucket_service.go` is
//!   the client side): `GET` filters by `org`/`orgID`/`id`/`name` with `limit` (1..=100, default 20:
//!   `influxdb.DecodeFindOptions`) and `offset`; an unknown org is 404; `DELETE /{id}` → 204, an id that is
//!   not 16 hex digits 400, an unknown one 404, a system bucket 400 "system buckets cannot be deleted"
//!   (`tenant/service_bucket.go`, `errDeleteSystemBucket`). Buckets of an org are listed by name (the
//!   org+name index).
//! - `tenant/service_org.go` `CreateOrganization`: a new org gets the system buckets `_tasks` and
//!   `_monitoring`.
//! - `http/backup_service.go`: `GET /api/v2/backup/metadata` needs operator permissions
//!   (`requireOperPermissions`) and answers `multipart/mixed` with the parts `kv`, `sql`, `buckets`;
//!   `GET /api/v2/backup/shards/{id}` a shard's data.
//! - `http/restore_service.go`: `POST /api/v2/restore/bucketMetadata` creates the bucket ("This will
//!   fail if the bucket already exists": `EConflict`, 422) and answers 201 with the shard mappings;
//!   `POST /api/v2/restore/shards/{id}` takes the shard's data, gunzipped when `Content-Encoding: gzip`.
//!   `validBucketName` refuses a name starting with `_` for a non-system bucket.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::{Value, json};

/// The operator token the image's setup made for the admin.
pub(super) const OPERATOR_TOKEN: &str = "operator-token-of-the-setup";
/// A later, read-only token of the same user (listed after the operator token).
pub(super) const READ_TOKEN: &str = "read-only-token-made-later";

#[derive(Clone, Debug)]
pub(super) struct Bucket {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub system: bool,
    pub shard: u64,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub orgs: BTreeMap<String, String>,
    pub buckets: Vec<Bucket>,
    next: u64,
    sessions: HashSet<String>,
    /// Every request: method, path and query, and how it authenticated ("token:…", "session", "none").
    pub log: Vec<String>,
    /// Requests refused, with why.
    pub refused: Vec<String>,
    /// When set, shard downloads fail with 500 (a backup cut short).
    pub fail_shards: bool,
    /// When set, bucket listings by org fail with 500.
    pub fail_listing: bool,
    /// When set, `GET /api/v2/authorizations` fails with 500.
    pub fail_authorizations: bool,
    /// When set, `GET /api/v2/authorizations` answers an empty list (the admin has no token).
    pub no_tokens: bool,
}

pub(super) struct Influx {
    pub password: String,
    pub inner: Mutex<Inner>,
}

#[derive(PartialEq)]
enum Who {
    Operator,
    Reader,
    Session,
}

impl Inner {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:016x}", 0x0b00_0000_0000_0000_u64 + self.next)
    }
    fn shard(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl Influx {
    /// An InfluxDB whose setup made org `org` (with its system buckets) and the user `admin` with
    /// `password`, then the user buckets `buckets` (name, data).
    pub(super) fn new(password: &str, org: &str, buckets: &[(&str, &str)]) -> Arc<Self> {
        let influx = Influx { password: password.into(), inner: Mutex::new(Inner::default()) };
        {
            let mut inner = influx.inner.lock().unwrap();
            create_org(&mut inner, org);
            let org_id = inner.orgs[org].clone();
            for (name, data) in buckets {
                let (id, shard) = (inner.id(), inner.shard());
                inner.buckets.push(Bucket {
                    id,
                    org_id: org_id.clone(),
                    name: (*name).into(),
                    system: false,
                    shard,
                    data: data.as_bytes().to_vec(),
                });
            }
        }
        Arc::new(influx)
    }

    /// The buckets of `org`: name → (system, data).
    pub(super) fn buckets_of(&self, org: &str) -> BTreeMap<String, (bool, String)> {
        let inner = self.inner.lock().unwrap();
        let org_id = inner.orgs.get(org).cloned().unwrap_or_default();
        inner
            .buckets
            .iter()
            .filter(|b| b.org_id == org_id)
            .map(|b| (b.name.clone(), (b.system, String::from_utf8_lossy(&b.data).into_owned())))
            .collect()
    }

    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let lower = value.to_ascii_lowercase();
            let token = if lower.starts_with("token ") || lower.starts_with("bearer ") {
                value.split_once(' ').map(|(_, t)| t)
            } else {
                None
            };
            return match token {
                Some(OPERATOR_TOKEN) => Some(Who::Operator),
                Some(READ_TOKEN) => Some(Who::Reader),
                _ => None,
            };
        }
        let inner = self.inner.lock().unwrap();
        let cookies =
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        cookies
            .iter()
            .flat_map(|c| c.split(';'))
            .any(|c| {
                c.trim().strip_prefix("influxdb-oss-session=").is_some_and(|t| inner.sessions.contains(t))
            })
            .then_some(Who::Session)
    }
}

fn create_org(inner: &mut Inner, name: &str) -> String {
    let id = inner.id();
    inner.orgs.insert(name.into(), id.clone());
    for system in ["_tasks", "_monitoring"] {
        let (bucket, shard) = (inner.id(), inner.shard());
        inner.buckets.push(Bucket {
            id: bucket,
            org_id: id.clone(),
            name: system.into(),
            system: true,
            shard,
            data: vec![],
        });
    }
    id
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": message}))).into_response()
}

/// `kithttp.API.Respond`: JSON indented with tabs.
fn respond(status: StatusCode, value: &Value) -> Response {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut serializer).unwrap();
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], out).into_response()
}

fn bucket_json(b: &Bucket) -> Value {
    json!({"id": b.id, "orgID": b.org_id, "type": if b.system { "system" } else { "user" }, "name": b.name,
           "retentionRules": [], "links": {}})
}

fn manifest_of(b: &Bucket, org: &str) -> Value {
    json!({"organizationID": b.org_id, "organizationName": org, "bucketID": b.id, "bucketName": b.name,
           "defaultRetentionPolicy": "autogen",
           "retentionPolicies": [{"name": "autogen", "replicaN": 1, "duration": 0,
               "shardGroupDuration": 604_800_000_000_000_i64,
               "shardGroups": [{"id": b.shard, "startTime": "2026-12-01T00:00:00Z", "endTime": "2026-12-08T00:00:00Z",
                                "shards": [{"id": b.shard, "shardOwners": [{"nodeID": 0}]}]}],
               "subscriptions": []}]})
}

async fn handle(
    State(s): State<Arc<Influx>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let who = s.who(&headers);
    let how = match who {
        Some(Who::Operator) => "token:operator",
        Some(Who::Reader) => "token:read",
        Some(Who::Session) => "session",
        None => "none",
    };
    s.inner.lock().unwrap().log.push(format!("{method} {uri} {how}"));
    let refuse = |why: String| {
        s.inner.lock().unwrap().refused.push(why.clone());
        error(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized access")
    };
    // Routes without authentication.
    if path == "/health" && method == Method::GET {
        return (
            [("X-Influxdb-Build", "OSS"), ("X-Influxdb-Version", "v2.7.12")],
            axum::Json(json!({"name": "influxdb", "status": "pass", "version": "v2.7.12"})),
        )
            .into_response();
    }
    if path == "/api/v2/signin" && method == Method::POST {
        let user = super::basic(&headers);
        return match user {
            Some((u, p)) if u == "admin" && p == s.password => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                s.inner.lock().unwrap().sessions.insert(token.clone());
                let cookie = format!("influxdb-oss-session={token}; Path=/api/; HttpOnly");
                (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
            }
            _ => refuse("signin: wrong credentials".into()),
        };
    }
    let Some(who) = who else { return refuse(format!("{method} {path} without a token or session")) };
    let mut inner = s.inner.lock().unwrap();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/api/v2/authorizations") => {
            if inner.fail_authorizations {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "authorizations unavailable",
                );
            }
            if query.get("user").is_some_and(|u| u != "admin") {
                return error(StatusCode::NOT_FOUND, "not found", "user not found");
            }
            let auth = |id: &str, token: &str, description: &str| {
                json!({"id": id, "token": token, "status": "active", "description": description,
                       "orgID": inner.orgs.values().next(), "userID": "0a1b2c3d4e5f6789", "user": "admin",
                       "permissions": []})
            };
            let list = if inner.no_tokens {
                vec![]
            } else {
                vec![
                    auth("0c00000000000001", OPERATOR_TOKEN, "admin's Token"),
                    auth("0c00000000000002", READ_TOKEN, "a read-only token"),
                ]
            };
            respond(
                StatusCode::OK,
                &json!({"links": {"self": "/api/v2/authorizations"}, "authorizations": list}),
            )
        }
        (Method::GET, "/api/v2/buckets") => {
            if inner.fail_listing && query.contains_key("org") {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "bucket index unavailable",
                );
            }
            let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
                None => 20,
                Some(Ok(l)) if (1..=100).contains(&l) => l,
                _ => return error(StatusCode::BAD_REQUEST, "invalid", "limit must be between 1 and 100"),
            };
            let offset = query.get("offset").and_then(|o| o.parse::<usize>().ok()).unwrap_or(0);
            let mut found: Vec<&Bucket> = inner.buckets.iter().collect();
            if let Some(id) = query.get("id") {
                found.retain(|b| &b.id == id);
                if found.is_empty() {
                    return error(StatusCode::NOT_FOUND, "not found", "bucket not found");
                }
            }
            let org_id = match (query.get("orgID"), query.get("org")) {
                (Some(id), _) => Some(id.clone()),
                (None, Some(name)) => match inner.orgs.get(name) {
                    Some(id) => Some(id.clone()),
                    None => {
                        return error(
                            StatusCode::NOT_FOUND,
                            "not found",
                            &format!("organization name \"{name}\" not found"),
                        );
                    }
                },
                _ => None,
            };
            if let Some(org_id) = org_id {
                found.retain(|b| b.org_id == org_id);
            }
            if let Some(name) = query.get("name") {
                found.retain(|b| &b.name == name);
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            let page: Vec<Value> = found.into_iter().skip(offset).take(limit).map(bucket_json).collect();
            respond(StatusCode::OK, &json!({"links": {}, "buckets": page}))
        }
        (Method::DELETE, p) if p.starts_with("/api/v2/buckets/") => {
            let id = &p["/api/v2/buckets/".len()..];
            if id.len() != 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return error(StatusCode::BAD_REQUEST, "invalid", "id must have a length of 16 bytes");
            }
            let Some(at) = inner.buckets.iter().position(|b| b.id == id) else {
                return error(StatusCode::NOT_FOUND, "not found", "bucket not found");
            };
            if inner.buckets[at].system {
                return error(StatusCode::BAD_REQUEST, "invalid", "system buckets cannot be deleted");
            }
            if who == Who::Reader {
                return error(StatusCode::FORBIDDEN, "forbidden", "write:buckets is unauthorized");
            }
            inner.buckets.remove(at);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, "/api/v2/backup/metadata") => {
            if who != Who::Operator {
                drop(inner);
                return refuse("backup metadata without operator permissions".into());
            }
            let orgs: BTreeMap<String, String> =
                inner.orgs.iter().map(|(n, i)| (i.clone(), n.clone())).collect();
            let buckets: Vec<Value> =
                inner.buckets.iter().map(|b| manifest_of(b, &orgs[&b.org_id])).collect();
            let boundary = "fakeinfluxboundary";
            let mut out = String::new();
            for (name, kind, content) in [
                ("kv", "application/octet-stream", "KV SNAPSHOT".to_owned()),
                ("sql", "application/octet-stream", "SQL SNAPSHOT".to_owned()),
                ("buckets", "application/json; charset=utf-8", serde_json::to_string(&buckets).unwrap()),
            ] {
                out += &format!(
                    "--{boundary}\r\nContent-Disposition: attachment; name=\"{name}\"\r\nContent-Type: {kind}\r\n\r\n{content}\r\n"
                );
            }
            out += &format!("--{boundary}--\r\n");
            ([(header::CONTENT_TYPE, format!("multipart/mixed; boundary={boundary}"))], out).into_response()
        }
        (Method::GET, p) if p.starts_with("/api/v2/backup/shards/") => {
            if inner.fail_shards {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "shard read failed");
            }
            let id: u64 = p["/api/v2/backup/shards/".len()..].parse().unwrap_or(0);
            match inner.buckets.iter().find(|b| b.shard == id) {
                Some(b) => b.data.clone().into_response(),
                None => error(StatusCode::NOT_FOUND, "not found", "shard not found"),
            }
        }
        (Method::GET, "/api/v2/orgs") => {
            match query.get("org").and_then(|n| inner.orgs.get(n).map(|i| (n, i))) {
                Some((name, id)) => respond(StatusCode::OK, &json!({"orgs": [{"id": id, "name": name}]})),
                None => error(StatusCode::NOT_FOUND, "not found", "organization not found"),
            }
        }
        (Method::POST, "/api/v2/orgs") => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = request["name"].as_str().unwrap_or_default().to_owned();
            let id = create_org(&mut inner, &name);
            respond(StatusCode::CREATED, &json!({"id": id, "name": name}))
        }
        (Method::POST, "/api/v2/restore/bucketMetadata") => {
            let m: Value = serde_json::from_slice(&body).unwrap_or_default();
            let (org_id, name) = (
                m["organizationID"].as_str().unwrap_or_default(),
                m["bucketName"].as_str().unwrap_or_default(),
            );
            if !inner.orgs.values().any(|id| id == org_id) {
                return error(StatusCode::NOT_FOUND, "not found", "organization not found");
            }
            if name.starts_with('_') {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("bucket name {name} is invalid. Buckets may not start with underscore"),
                );
            }
            if inner.buckets.iter().any(|b| b.org_id == org_id && b.name == name) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "conflict",
                    &format!("bucket with name {name} already exists"),
                );
            }
            let (id, shard) = (inner.id(), inner.shard());
            inner.buckets.push(Bucket {
                id: id.clone(),
                org_id: org_id.into(),
                name: name.into(),
                system: false,
                shard,
                data: vec![],
            });
            let old: Vec<u64> = m["retentionPolicies"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rp| rp["shardGroups"].as_array().into_iter().flatten())
                .flat_map(|sg| sg["shards"].as_array().into_iter().flatten())
                .filter_map(|sh| sh["id"].as_u64())
                .collect();
            let mappings: Vec<Value> = old.iter().map(|o| json!({"oldId": o, "newId": shard})).collect();
            respond(StatusCode::CREATED, &json!({"id": id, "name": name, "shardMappings": mappings}))
        }
        (Method::POST, p) if p.starts_with("/api/v2/restore/shards/") => {
            let id: u64 = p["/api/v2/restore/shards/".len()..].parse().unwrap_or(0);
            let mut data = body.to_vec();
            if headers.get(header::CONTENT_ENCODING).is_some_and(|e| e == "gzip") {
                match gunzip(&data) {
                    Some(out) => data = out,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            "failed to decode gzip request body",
                        );
                    }
                }
            }
            match inner.buckets.iter_mut().find(|b| b.shard == id) {
                Some(b) => {
                    b.data = data;
                    StatusCode::OK.into_response()
                }
                None => error(StatusCode::NOT_FOUND, "not found", "shard not found"),
            }
        }
        _ => {
            inner.refused.push(format!("a route the Jobs should not use: {method} {path}"));
            error(StatusCode::NOT_FOUND, "not found", "path not found")
        }
    }
}

/// `gzip -dc` of `data`; `None` when it is not gzip.
fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

pub(super) fn router(influx: Arc<Influx>) -> Router {
    Router::new().fallback(any(handle)).with_state(influx)
}

/// What a test reads of a request log: (method and path, authentication).
pub(super) fn log(influx: &Influx) -> Vec<String> {
    influx.inner.lock().unwrap().log.clone()
}

//! The users Job of a Grafana instance (`render::user_tokens`, `render::token_scripts::grafana`), its
//! script run under `sh` with the real curl against a fake of Grafana 11's service accounts API and the
//! fake API server of `user_jobs`.
//!
//! Grafana 11 rules (grafana/grafana `pkg/services/serviceaccounts/api/api.go`, `api/token.go`,
//! `models.go`): every route needs the admin's Basic credentials here (401 otherwise); `POST
//! /api/serviceaccounts` binds `{name (required), role, isDisabled}` (400 "Bad request data" without a name,
//! 400 "invalid role specified", 400 "service account already exists" for a name taken) and answers 201 with
//! the account; `GET /api/serviceaccounts/search?query=` lists the accounts whose name contains the query;
//! `POST /api/serviceaccounts/{id}/tokens` `{name (required), secondsToLive}` answers 200 with `id`, `name`,
//! `key` (404 for no such account, 400 for a token name taken); `DELETE /api/serviceaccounts/{id}` and
//! `…/tokens/{tokenId}` answer 200, 404 for none; a verb a route lacks is 405.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, delete, get},
};
use cluster_agent::{
    crd::{ManagedInstance, UserTarget},
    render::{
        user_tokens::{TokenUser, job, role},
        users::secret_name,
    },
};
use serde_json::{Value, json};

use crate::{
    fixture,
    user_jobs::{ADMIN_PASSWORD, BEARER, Kube, basic, run_job, serve},
};

#[derive(Clone, Debug, PartialEq)]
struct Account {
    name: String,
    role: String,
    /// token id → (name, key)
    tokens: BTreeMap<u64, (String, String)>,
}

#[derive(Default)]
struct Grafana {
    accounts: Mutex<BTreeMap<u64, Account>>,
    next: Mutex<u64>,
    refused: Mutex<Vec<String>>,
    /// the search answers 500 (a Grafana whose database is away)
    search_fails: std::sync::atomic::AtomicBool,
}

impl Grafana {
    fn refuse(&self, status: StatusCode, why: &str) -> Response {
        self.refused.lock().unwrap().push(why.to_owned());
        (status, axum::Json(json!({"message": why}))).into_response()
    }

    fn next(&self) -> u64 {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        *next
    }

    fn admin(headers: &HeaderMap) -> bool {
        basic(headers).is_some_and(|(u, p)| u == "admin" && p == ADMIN_PASSWORD)
    }
}

fn grafana_router(grafana: Arc<Grafana>) -> Router {
    Router::new()
        .route(
            "/api/serviceaccounts",
            any(|State(g): State<Arc<Grafana>>, method: Method, headers: HeaderMap, body: String| async move {
                if !Grafana::admin(&headers) {
                    return g.refuse(StatusCode::UNAUTHORIZED, "serviceaccounts without the admin's credentials");
                }
                if method != Method::POST {
                    return g.refuse(StatusCode::METHOD_NOT_ALLOWED, "serviceaccounts: not a POST");
                }
                let form: Value = serde_json::from_str(&body).unwrap_or_default();
                let Some(name) = form["name"].as_str().filter(|n| !n.is_empty()) else {
                    return g.refuse(StatusCode::BAD_REQUEST, "Bad request data");
                };
                let role = form["role"].as_str().unwrap_or("Viewer");
                if !["Viewer", "Editor", "Admin", "None"].contains(&role) {
                    return g.refuse(StatusCode::BAD_REQUEST, "invalid role specified");
                }
                if g.accounts.lock().unwrap().values().any(|a| a.name == name) {
                    return g.refuse(StatusCode::BAD_REQUEST, "service account already exists");
                }
                let id = g.next();
                let account = Account { name: name.into(), role: role.into(), tokens: BTreeMap::new() };
                g.accounts.lock().unwrap().insert(id, account);
                let answer = json!({"id": id, "uid": format!("u{id}"), "name": name, "login": format!("sa-1-{name}"),
                    "orgId": 1, "isDisabled": false, "role": role, "tokens": 0, "avatarUrl": "/avatar/x"});
                (StatusCode::CREATED, serde_json::to_string(&answer).unwrap()).into_response()
            }),
        )
        .route(
            "/api/serviceaccounts/search",
            get(|State(g): State<Arc<Grafana>>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| async move {
                if !Grafana::admin(&headers) {
                    return g.refuse(StatusCode::UNAUTHORIZED, "search without the admin's credentials");
                }
                if g.search_fails.load(std::sync::atomic::Ordering::SeqCst) {
                    return g.refuse(StatusCode::INTERNAL_SERVER_ERROR, "Failed to get service accounts");
                }
                let query = q.get("query").cloned().unwrap_or_default();
                let found: Vec<Value> = g.accounts.lock().unwrap().iter()
                    .filter(|(_, a)| a.name.contains(&query))
                    .map(|(id, a)| json!({"id": id, "uid": format!("u{id}"), "name": a.name, "login": format!("sa-1-{}", a.name),
                        "orgId": 1, "isDisabled": false, "role": a.role, "tokens": a.tokens.len()}))
                    .collect();
                let answer = json!({"totalCount": found.len(), "serviceAccounts": found, "page": 1, "perPage": 1000});
                (StatusCode::OK, serde_json::to_string(&answer).unwrap()).into_response()
            }),
        )
        .route(
            "/api/serviceaccounts/{id}",
            delete(|State(g): State<Arc<Grafana>>, Path(id): Path<u64>, headers: HeaderMap| async move {
                if !Grafana::admin(&headers) {
                    return g.refuse(StatusCode::UNAUTHORIZED, "DELETE without the admin's credentials");
                }
                match g.accounts.lock().unwrap().remove(&id) {
                    Some(_) => axum::Json(json!({"message": "Service account deleted"})).into_response(),
                    None => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "service account not found"}))).into_response(),
                }
            }),
        )
        .route(
            "/api/serviceaccounts/{id}/tokens",
            any(|State(g): State<Arc<Grafana>>, method: Method, Path(id): Path<u64>, headers: HeaderMap, body: String| async move {
                if !Grafana::admin(&headers) {
                    return g.refuse(StatusCode::UNAUTHORIZED, "tokens without the admin's credentials");
                }
                if method != Method::POST {
                    return g.refuse(StatusCode::METHOD_NOT_ALLOWED, "tokens: not a POST");
                }
                let form: Value = serde_json::from_str(&body).unwrap_or_default();
                let Some(name) = form["name"].as_str().filter(|n| !n.is_empty()) else {
                    return g.refuse(StatusCode::BAD_REQUEST, "Bad request data");
                };
                let taken = g.accounts.lock().unwrap().values().any(|a| a.tokens.values().any(|(n, _)| n == name));
                if taken {
                    return g.refuse(StatusCode::BAD_REQUEST, "service account token with given name already exists in the organization");
                }
                let token_id = g.next();
                let key = format!("glsa_{}_{:08x}", uuid::Uuid::new_v4().simple(), token_id);
                let mut accounts = g.accounts.lock().unwrap();
                let Some(account) = accounts.get_mut(&id) else {
                    drop(accounts);
                    return g.refuse(StatusCode::NOT_FOUND, "service account not found");
                };
                account.tokens.insert(token_id, (name.to_owned(), key.clone()));
                axum::Json(json!({"id": token_id, "name": name, "key": key})).into_response()
            }),
        )
        .route(
            "/api/serviceaccounts/{id}/tokens/{token}",
            delete(|State(g): State<Arc<Grafana>>, Path((id, token)): Path<(u64, u64)>, headers: HeaderMap| async move {
                if !Grafana::admin(&headers) {
                    return g.refuse(StatusCode::UNAUTHORIZED, "DELETE token without the admin's credentials");
                }
                let removed = g.accounts.lock().unwrap().get_mut(&id).and_then(|a| a.tokens.remove(&token));
                match removed {
                    Some(_) => axum::Json(json!({"message": "Service account token deleted"})).into_response(),
                    None => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "service account token not found"}))).into_response(),
                }
            }),
        )
        .fallback(|State(g): State<Arc<Grafana>>| async move {
            g.refuse(StatusCode::NOT_FOUND, "a route the users Job should not use")
        })
        .with_state(grafana)
}

fn instance(users: &[(&str, &str, u64)]) -> ManagedInstance {
    let mut mi = fixture::instance("grafana", "11.6", json!({}));
    mi.spec.users = users
        .iter()
        .map(|(name, role, generation)| UserTarget {
            name: (*name).into(),
            role: (*role).into(),
            generation: *generation,
        })
        .collect();
    mi
}

fn render(mi: &ManagedInstance, generation: u64, renew: &[bool], revoked: &[(String, String)]) -> Value {
    let users: Vec<TokenUser> =
        mi.spec.users.iter().zip(renew).map(|(user, renew)| TokenUser { user, renew: *renew }).collect();
    job(mi, generation, &users, revoked).object
}

struct Rig {
    grafana: Arc<Grafana>,
    address: std::net::SocketAddr,
    kube: Arc<Kube>,
    kube_address: std::net::SocketAddr,
}

impl Rig {
    async fn start(mi: &ManagedInstance, secrets: &[String]) -> Self {
        let allowed: Vec<String> =
            serde_json::from_value(role(mi, secrets)["rules"][0]["resourceNames"].clone()).unwrap();
        let grafana = Arc::new(Grafana::default());
        let address = serve(grafana_router(grafana.clone())).await;
        let (kube, kube_address) = Kube::start(secrets, allowed).await;
        Self { grafana, address, kube, kube_address }
    }

    async fn run(&self, job: &Value) -> (bool, String) {
        run_job(job, self.address, &self.kube, self.kube_address, BEARER).await
    }

    fn accounts(&self) -> BTreeMap<u64, Account> {
        self.grafana.accounts.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_grafana_users_job_makes_a_service_account_with_the_role_and_hands_its_token_over() {
    let mi = instance(&[("dash_editor", "Editor", 7), ("dash_viewer", "Viewer", 8)]);
    let secrets = [secret_name("orders", "dash_editor"), secret_name("orders", "dash_viewer")];
    let rig = Rig::start(&mi, &secrets).await;
    let (ok, stderr) = rig.run(&render(&mi, 8, &[true, true], &[])).await;
    assert!(ok, "{stderr}; refused {:?} / {:?}", rig.grafana.refused, rig.kube.refused);
    let accounts = rig.accounts();
    for (secret, name, role) in
        [(&secrets[0], "dash_editor", "Editor"), (&secrets[1], "dash_viewer", "Viewer")]
    {
        let id: u64 = rig.kube.value(secret, "id").expect("the account's id").parse().unwrap();
        let account = &accounts[&id];
        assert_eq!((account.name.as_str(), account.role.as_str()), (name, role));
        let token_id: u64 = rig.kube.value(secret, "token-id").unwrap().parse().unwrap();
        assert_eq!(
            Some(&account.tokens[&token_id].1),
            rig.kube.value(secret, "password").as_ref(),
            "the token's key"
        );
    }
    // A rerun with the tokens kept: nothing new.
    let (ok, stderr) = rig.run(&render(&mi, 8, &[false, false], &[])).await;
    assert!(ok, "{stderr}");
    assert_eq!(rig.accounts(), accounts);
}

#[tokio::test]
async fn a_grafana_rotation_replaces_the_token_and_a_deletion_removes_the_service_account() {
    let mi = instance(&[("dash", "Viewer", 7)]);
    let secrets = [secret_name("orders", "dash")];
    let rig = Rig::start(&mi, &secrets).await;
    let (ok, stderr) = rig.run(&render(&mi, 7, &[true], &[])).await;
    assert!(ok, "{stderr}");
    let (id, old_key) =
        (rig.kube.value(&secrets[0], "id").unwrap(), rig.kube.value(&secrets[0], "password").unwrap());

    let mi = instance(&[("dash", "Viewer", 9)]);
    let (ok, stderr) = rig.run(&render(&mi, 9, &[true], &[])).await;
    assert!(ok, "{stderr}");
    let key = rig.kube.value(&secrets[0], "password").unwrap();
    assert_ne!(key, old_key, "a new token");
    assert_eq!(rig.kube.value(&secrets[0], "id").unwrap(), id, "the same service account");
    let account = &rig.accounts()[&id.parse().unwrap()];
    assert_eq!(
        account.tokens.values().map(|(_, k)| k.clone()).collect::<Vec<_>>(),
        [key],
        "the old token revoked"
    );

    let mi = instance(&[]);
    for _ in 0..2 {
        let (ok, stderr) = rig.run(&render(&mi, 10, &[], &[(secrets[0].clone(), "dash".to_owned())])).await;
        assert!(ok, "{stderr}");
        assert!(rig.accounts().is_empty(), "the service account deleted, also when already gone");
    }
}

#[tokio::test]
async fn a_service_account_an_earlier_run_made_is_found_by_its_name() {
    let mi = instance(&[("dash", "Viewer", 7)]);
    let secrets = [secret_name("orders", "dash")];
    let rig = Rig::start(&mi, &secrets).await;
    // Made, but its token never reached the Secret (the run failed after the POST).
    rig.grafana
        .accounts
        .lock()
        .unwrap()
        .insert(41, Account { name: "dash".into(), role: "Viewer".into(), tokens: BTreeMap::new() });
    rig.grafana
        .accounts
        .lock()
        .unwrap()
        .insert(40, Account { name: "dash_old".into(), role: "Editor".into(), tokens: BTreeMap::new() });
    *rig.grafana.next.lock().unwrap() = 50;
    let (ok, stderr) = rig.run(&render(&mi, 7, &[true], &[])).await;
    assert!(ok, "{stderr}");
    assert_eq!(rig.kube.value(&secrets[0], "id").as_deref(), Some("41"), "the account of that exact name");
    assert_eq!(rig.accounts()[&41].tokens.len(), 1);
    assert!(rig.grafana.refused.lock().unwrap().iter().any(|r| r == "service account already exists"));
}

/// A user deleted whose Secret never got its service account's id: the revoking Job finds the account by
/// the user's name and deletes it, and no other.
#[tokio::test]
async fn a_deleted_user_s_service_account_is_found_by_name_when_its_id_never_reached_the_secret() {
    let mi = instance(&[]);
    let secrets = [secret_name("orders", "gone")];
    let rig = Rig::start(&mi, &secrets).await;
    for (id, name) in [(41, "gone"), (42, "gone_too"), (43, "kept")] {
        let account = Account { name: name.into(), role: "Viewer".into(), tokens: BTreeMap::new() };
        rig.grafana.accounts.lock().unwrap().insert(id, account);
    }
    let (ok, stderr) = rig.run(&render(&mi, 9, &[], &[(secrets[0].clone(), "gone".to_owned())])).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        rig.accounts().keys().copied().collect::<Vec<_>>(),
        [42, 43],
        "only the deleted user's account"
    );
}

/// The same deletion while Grafana cannot search its accounts: the Job fails saying so, rather than
/// revoking nothing and succeeding (the images' `sh` has no `pipefail`; the search's failure must not be
/// lost on the left of a pipe or inside a command substitution).
#[tokio::test]
async fn a_deleted_user_s_revocation_fails_the_job_when_its_account_cannot_be_searched() {
    let mi = instance(&[]);
    let secrets = [secret_name("orders", "gone")];
    let rig = Rig::start(&mi, &secrets).await;
    let account = Account { name: "gone".into(), role: "Viewer".into(), tokens: BTreeMap::new() };
    rig.grafana.accounts.lock().unwrap().insert(41, account);
    rig.grafana.search_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, stderr) = rig.run(&render(&mi, 9, &[], &[(secrets[0].clone(), "gone".to_owned())])).await;
    assert!(!ok && stderr.contains("searching the service account of user gone failed"), "{stderr}");
    assert_eq!(rig.accounts().keys().copied().collect::<Vec<_>>(), [41], "nothing else deleted meanwhile");
}

#[tokio::test]
async fn grafana_refuses_what_the_job_no_longer_does() {
    let mi = instance(&[("dash", "Viewer", 7)]);
    let secrets = [secret_name("orders", "dash")];
    let rig = Rig::start(&mi, &secrets).await;
    let job = render(&mi, 7, &[true], &[]);
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap().to_owned();
    let with = |from: &str, to: &str| {
        assert!(script.contains(from), "{from} in the script");
        let mut job = job.clone();
        job["spec"]["template"]["spec"]["containers"][0]["command"][2] = json!(script.replace(from, to));
        job
    };
    let refused = || rig.grafana.refused.lock().unwrap().clone();
    // Without the admin's credentials: 401, the Job fails saying so.
    let (ok, stderr) = rig.run(&with("-K /tmp/admin.curl -X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts\")", "-X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts\")")).await;
    assert!(!ok && stderr.contains("HTTP 401"), "{stderr}");
    // A PUT where a POST is due: 405.
    let (ok, _) = rig.run(&with("-X POST -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts/$id/tokens\"", "-X PUT -H 'Content-Type: application/json' --data @/tmp/body \"$base/api/serviceaccounts/$id/tokens\"")).await;
    assert!(!ok);
    assert!(refused().iter().any(|r| r == "tokens: not a POST"), "{:?}", refused());
    assert_eq!(rig.kube.value(&secrets[0], "password"), None, "no token handed over");
}

/// On both backends: a Grafana user is made as an InfluxDB one is (a Secret without a token, an account
/// reaching only it, a Job), applied once the Job completed, and revoked by another Job.
async fn grafana_users_are_service_account_tokens_handed_over_by_a_job(backend: crate::common::Backend) {
    use crate::common::{View, World};
    use domain::{InstanceCommand, ServiceType};
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "dash", ServiceType::Grafana, "11.6").await;
    cluster.converges("provisioned", |v| v.ready_at("dash", 1)).await;
    let applied = |v: &View| v.managed_instance("dash")?["status"]["applied"]["users"].as_u64();
    let secret = "dash.user.viewer-app";
    let created = world
        .command(id, InstanceCommand::CreateUser { name: "viewer_app".into(), role: "Viewer".into() })
        .await;
    let job_name = format!("dash-users-{created}");
    cluster.converges("the users Job", |v| v.get("jobs.batch", &job_name).is_some()).await;
    let view = cluster.view().await;
    assert!(view.get("secrets", secret).is_some(), "the user's Secret, made before the Job");
    let role = view.get("roles.rbac.authorization.k8s.io", "dash-users").expect("the Job's Role");
    assert_eq!(role["rules"][0]["resourceNames"], json!([secret]));
    let job = view.get("jobs.batch", &job_name).unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(
        script.contains("grant 'viewer_app' 'dash.user.viewer-app'") && script.contains("'Viewer'; fi"),
        "{script}"
    );
    cluster.converges("the user applied", |v| applied(v) == Some(created)).await;
    if cluster.kube.is_sim() {
        let data = cluster.view().await.get("secrets", secret).unwrap()["data"].clone();
        assert!(data["password"].is_string() && data["id"].is_string(), "the token handed over: {data}");
    }
    let deleted = world.command(id, InstanceCommand::DeleteUser { name: "viewer_app".into() }).await;
    cluster.converges("the user revoked", |v| applied(v) == Some(deleted)).await;
    cluster.converges("the Secret gone", |v| v.get("secrets", secret).is_none()).await;
}
on_both_backends!(grafana_users_are_service_account_tokens_handed_over_by_a_job);

/// Deprovisioning an instance whose users Job is under way removes everything of its users with the
/// instance: their Secrets, the Job, and the Job's ServiceAccount, Role and RoleBinding (which no watch of
/// the agent's covers: deleted by name).
async fn deprovisioning_removes_the_users_secrets_and_the_job_s_account(backend: crate::common::Backend) {
    use crate::common::World;
    use domain::{InstanceCommand, ServiceType};
    let world = World::start(backend, &["c1"]).await;
    let cluster = world.cluster("c1");
    let id = world.provision("c1", "dash", ServiceType::Grafana, "11.6").await;
    cluster.converges("provisioned", |v| v.ready_at("dash", 1)).await;
    world.command(id, InstanceCommand::CreateUser { name: "viewer_app".into(), role: "Viewer".into() }).await;
    cluster
        .converges("the Job's account and the user's Secret", |v| {
            v.get("rolebindings.rbac.authorization.k8s.io", "dash-users").is_some()
                && v.get("secrets", "dash.user.viewer-app").is_some()
        })
        .await;
    world.deprovision(id).await;
    cluster
        .converges("everything removed", |v| {
            v.owned(id).is_empty()
                && v.get("serviceaccounts", "dash-users").is_none()
                && v.get("roles.rbac.authorization.k8s.io", "dash-users").is_none()
                && v.get("rolebindings.rbac.authorization.k8s.io", "dash-users").is_none()
                && v.get("secrets", "dash.user.viewer-app").is_none()
        })
        .await;
}
on_both_backends!(deprovisioning_removes_the_users_secrets_and_the_job_s_account);

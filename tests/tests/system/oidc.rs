//! JWTs from an OpenID Connect issuer: the issuer here is a local HTTP server serving discovery and a
//! JWKS of Ed25519 keys this test makes; the API finds the keys through discovery as it would in
//! production.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use api::auth::{OidcConfig, OidcVerifier};
use axum::{
    Json, Router,
    extract::State,
    http::{Method, StatusCode},
    routing::get,
};
use base64::Engine as _;
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use streams::envelope::headers;
use system_tests::TestApi;

const AUDIENCE: &str = "cp-api";

/// A signing key and the JWK that publishes it.
struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &str) -> Self {
        let signing = SigningKey::from_bytes(&rand::random());
        let der = signing.to_pkcs8_der().expect("pkcs8");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            // RFC 8037 section 2: an Ed25519 public key as a JWK.
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
        }
    }
}

/// The issuer: discovery, a JWKS it can change, and a count of JWKS fetches; its JWKS endpoint can be
/// made to fail ([`FAILING`]) or hang ([`HANGING`]), and `/huge` serves a JWKS larger than any real one.
#[derive(Clone)]
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    mode: Arc<AtomicUsize>,
}

/// The JWKS endpoint answers 500.
const FAILING: usize = 1;
/// The JWKS endpoint never answers.
const HANGING: usize = 2;

impl Issuer {
    async fn start(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Self {
            url,
            jwks: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            fetches: Arc::default(),
            mode: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(issuer): State<Issuer>| async move {
                    Json(json!({"issuer": issuer.url, "jwks_uri": format!("{}/jwks", issuer.url)}))
                }),
            )
            .route(
                "/jwks",
                get(|State(issuer): State<Issuer>| async move {
                    issuer.fetches.fetch_add(1, Ordering::SeqCst);
                    match issuer.mode.load(Ordering::SeqCst) {
                        FAILING => return Err(StatusCode::INTERNAL_SERVER_ERROR),
                        HANGING => std::future::pending::<()>().await,
                        _ => {}
                    }
                    Ok(Json(json!({"keys": *issuer.jwks.lock().unwrap()})))
                }),
            )
            .route(
                "/huge",
                get(|| async { Json(json!({"keys": [], "padding": "x".repeat(2 * 1024 * 1024)})) }),
            )
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        issuer
    }

    fn publish(&self, keys: &[&Key]) {
        *self.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn config(&self) -> OidcConfig {
        OidcConfig::new(&self.url, AUDIENCE)
    }

    /// A token signed with `key`; `claims` are added to a valid set and may override it.
    fn token(&self, key: &Key, claims: Value) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut all = json!({"iss": self.url, "aud": AUDIENCE, "sub": "alice@example.com", "exp": now + 300});
        all.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
        let header = Header { kid: Some(key.kid.clone()), ..Header::new(Algorithm::EdDSA) };
        jsonwebtoken::encode(&header, &all, &key.encoding).unwrap()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn list_as(api: &TestApi, token: &str) -> StatusCode {
    api.call(Method::GET, "/v1/projects/acme/instances", None, &[("authorization", &bearer(token))])
        .await
        .status
}

#[tokio::test]
async fn a_jwt_from_the_issuer_acts_with_the_roles_its_claims_grant_and_events_name_its_subject() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(issuer.config()).await.unwrap());

    let editor = issuer.token(&key, json!({"cp_projects": {"acme": "editor"}}));
    let body = json!({"name": "db", "service": "postgresql", "version": "16", "plan": "starter"});
    let created = api
        .call(
            Method::POST,
            "/v1/projects/acme/instances",
            Some(&body),
            &[("authorization", &bearer(&editor))],
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let sequence: u64 = created.header("cp-stream-sequence").unwrap().parse().unwrap();
    let message = api.state.events.direct_get(sequence).await.unwrap();
    assert_eq!(message.headers.get(headers::ACTOR).map(|v| v.as_str()), Some("alice@example.com"));

    let other = api
        .call(Method::GET, "/v1/projects/other/instances", None, &[("authorization", &bearer(&editor))])
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another project's resources do not exist for this token"
    );

    let viewer = issuer.token(&key, json!({"cp_projects": {"acme": "viewer"}}));
    let write = api
        .call(
            Method::POST,
            "/v1/projects/acme/instances",
            Some(&body),
            &[("authorization", &bearer(&viewer))],
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.body);
    assert_eq!(list_as(&api, &viewer).await, StatusCode::OK);

    let no_roles = issuer.token(&key, json!({}));
    assert_eq!(list_as(&api, &no_roles).await, StatusCode::NOT_FOUND, "authenticated, but no project");
    let cluster = json!({"region": "eu"});
    let register = |token: String| {
        let api = &api;
        let cluster = &cluster;
        async move {
            let auth = bearer(&token);
            api.call(Method::PUT, "/v1/admin/clusters/c9", Some(cluster), &[("authorization", &auth)])
                .await
                .status
        }
    };
    assert_eq!(register(editor.clone()).await, StatusCode::FORBIDDEN);
    let platform_admin = issuer.token(&key, json!({"cp_platform_admin": true}));
    assert!(register(platform_admin).await.is_success(), "the platform-admin claim registers clusters");
}

#[tokio::test]
async fn a_jwt_that_is_not_for_this_api_or_not_signed_by_the_issuer_is_401() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(issuer.config()).await.unwrap());
    let roles = json!({"cp_projects": {"acme": "admin"}});
    assert_eq!(
        list_as(&api, &issuer.token(&key, roles.clone())).await,
        StatusCode::OK,
        "the valid one passes"
    );

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let stranger = Key::new("k1");
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300, "cp_projects": {"acme": "admin"}}),
        &EncodingKey::from_secret(key.jwk["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let valid = issuer.token(&key, roles.clone());
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let escalated = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"iss": issuer.url, "aud": AUDIENCE, "sub": "alice@example.com", "exp": now + 300, "cp_platform_admin": true})
            .to_string(),
    );
    let refused = [
        (
            "another issuer",
            issuer.token(&key, json!({"iss": "https://elsewhere.example", "cp_projects": {"acme": "admin"}})),
        ),
        (
            "another audience",
            issuer.token(&key, json!({"aud": "someone-else", "cp_projects": {"acme": "admin"}})),
        ),
        (
            "expired beyond the leeway",
            issuer.token(&key, json!({"exp": now - 120, "cp_projects": {"acme": "admin"}})),
        ),
        ("no expiry", {
            let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::EdDSA) };
            jsonwebtoken::encode(
                &header,
                &json!({"iss": issuer.url, "aud": AUDIENCE, "sub": "a", "cp_projects": {"acme": "admin"}}),
                &key.encoding,
            )
            .unwrap()
        }),
        ("signed by a key of the same kid the issuer does not hold", issuer.token(&stranger, roles.clone())),
        ("HMAC with the public key as secret", hmac),
        ("claims changed after signing", format!("{head}.{escalated}.{signature}")),
    ];
    for (what, token) in refused {
        let reply = api
            .call(Method::GET, "/v1/projects/acme/instances", None, &[("authorization", &bearer(&token))])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.body);
        assert!(
            reply.header("www-authenticate").is_some_and(|c| c.contains(r#"error="invalid_token""#)),
            "{what}: the challenge says the token is invalid"
        );
    }
}

#[tokio::test]
async fn keys_the_issuer_rotates_in_are_fetched_and_keys_it_withdraws_stop_working() {
    let old = Key::new("2026-11");
    let new = Key::new("2026-12");
    let issuer = Issuer::start(&[&old]).await;
    let roles = json!({"cp_projects": {"acme": "viewer"}});

    // Default pacing: a token naming a key the cache lacks fetches the keys again, at most every 10 s.
    let paced = TestApi::start().await.with_oidc(OidcVerifier::discover(issuer.config()).await.unwrap());
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "keys fetched once at start");
    for n in 0..20 {
        let random = Key::new(&format!("random-{n}"));
        assert_eq!(list_as(&paced, &issuer.token(&random, roles.clone())).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "unknown kids right after a fetch fetch nothing");

    // An issuer's rotation: the new key is published beside the old one, tokens signed with it follow.
    let rotating = OidcConfig { min_refetch_interval: Duration::ZERO, ..issuer.config() };
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(rotating).await.unwrap());
    let before = issuer.fetches.load(Ordering::SeqCst);
    assert_eq!(list_as(&api, &issuer.token(&old, roles.clone())).await, StatusCode::OK);
    issuer.publish(&[&old, &new]);
    assert_eq!(
        list_as(&api, &issuer.token(&new, roles.clone())).await,
        StatusCode::OK,
        "the new key is fetched"
    );
    assert_eq!(
        list_as(&api, &issuer.token(&old, roles.clone())).await,
        StatusCode::OK,
        "the old one still works"
    );
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), before + 1, "one fetch, for the unknown kid");

    // Withdrawal takes effect once the cached keys are older than `max_key_staleness` (zero here, so every
    // token waits for a fetch; `an_issuer_away_delays_no_login_and_its_keys_expire` shows the refresh that
    // runs in the background between `max_key_age` and `max_key_staleness`).
    let withdrawing = OidcConfig {
        min_refetch_interval: Duration::ZERO,
        max_key_age: Duration::ZERO,
        max_key_staleness: Duration::ZERO,
        ..issuer.config()
    };
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(withdrawing).await.unwrap());
    assert_eq!(list_as(&api, &issuer.token(&old, roles.clone())).await, StatusCode::OK);
    issuer.publish(&[&new]);
    assert_eq!(
        list_as(&api, &issuer.token(&old, roles.clone())).await,
        StatusCode::UNAUTHORIZED,
        "withdrawn"
    );
    assert_eq!(list_as(&api, &issuer.token(&new, roles)).await, StatusCode::OK);
}

#[tokio::test]
async fn an_issuer_whose_discovery_names_another_issuer_is_refused_at_start() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    let wrong = OidcConfig::new(format!("{}/", issuer.url), AUDIENCE);
    let error = OidcVerifier::discover(wrong).await.unwrap_err();
    assert!(error.to_string().contains("names the issuer"), "{error}");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_401() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(issuer.config()).await.unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let roles = json!({"cp_projects": {"acme": "viewer"}});
    let mut later = roles.clone();
    later["nbf"] = json!(now + 600);
    assert_eq!(list_as(&api, &issuer.token(&key, later)).await, StatusCode::UNAUTHORIZED);
    let mut already = roles;
    already["nbf"] = json!(now - 10);
    assert_eq!(list_as(&api, &issuer.token(&key, already)).await, StatusCode::OK);
}

#[tokio::test]
async fn keys_come_over_https_or_from_this_machine_and_no_larger_than_a_real_jwks() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): refused before any connection is tried.
    let plain = OidcConfig { jwks_url: Some("http://192.0.2.1/jwks".into()), ..issuer.config() };
    let error = OidcVerifier::discover(plain).await.unwrap_err().to_string();
    assert!(error.contains("not an https URL"), "{error}");
    let huge = OidcConfig { jwks_url: Some(format!("{}/huge", issuer.url)), ..issuer.config() };
    let error = OidcVerifier::discover(huge).await.unwrap_err().to_string();
    assert!(error.contains("at most 1048576 bytes"), "{error}");
}

#[tokio::test]
async fn an_issuer_away_delays_no_login_and_its_keys_expire() {
    let key = Key::new("k1");
    let issuer = Issuer::start(&[&key]).await;
    let token = issuer.token(&key, json!({"cp_projects": {"acme": "viewer"}}));
    // Keys due for a refresh at every login, usable for an hour while the issuer is away.
    let lenient = OidcConfig {
        max_key_age: Duration::ZERO,
        min_refetch_interval: Duration::ZERO,
        max_key_staleness: Duration::from_secs(3600),
        ..issuer.config()
    };
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(lenient).await.unwrap());
    // The issuer hangs: a login with a key the cache holds answers at once (the refresh runs beside it),
    // not after the 10 s fetch timeout.
    issuer.mode.store(HANGING, Ordering::SeqCst);
    let answered = tokio::time::timeout(Duration::from_secs(2), list_as(&api, &token)).await;
    assert_eq!(answered, Ok(StatusCode::OK), "a login waited for the issuer");
    // The issuer fails: the cached key keeps working while it is younger than `max_key_staleness` ...
    issuer.mode.store(FAILING, Ordering::SeqCst);
    assert_eq!(list_as(&api, &token).await, StatusCode::OK);
    // ... and not once it is older: with a staleness of zero the keys fetched at start are stale at once.
    issuer.mode.store(0, Ordering::SeqCst);
    let strict = OidcConfig {
        min_refetch_interval: Duration::ZERO,
        max_key_staleness: Duration::ZERO,
        ..issuer.config()
    };
    let api = TestApi::start().await.with_oidc(OidcVerifier::discover(strict).await.unwrap());
    issuer.mode.store(FAILING, Ordering::SeqCst);
    assert_eq!(list_as(&api, &token).await, StatusCode::UNAUTHORIZED, "stale keys are not used");
    // Back: the keys are fetched again and the token works.
    issuer.mode.store(0, Ordering::SeqCst);
    assert_eq!(list_as(&api, &token).await, StatusCode::OK);
}

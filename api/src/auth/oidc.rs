//! JWTs from an OpenID Connect issuer: the production way to authenticate. The issuer's signing keys come
//! from its JWKS (found through discovery, OpenID Connect Discovery 1.0 section 4), are cached, and are
//! fetched again when a token names a key the cache does not hold (the issuer rotated) and, in the
//! background, once they are [`MAX_KEY_AGE`] old (so a key the issuer withdrew stops being accepted, and no
//! login waits for the issuer for a key it has). While the issuer is away the cached keys are used for at
//! most [`MAX_KEY_STALENESS`]. Documents come over HTTPS (plain HTTP from loopback only, for a local
//! issuer) and are read up to 1 MiB.
//!
//! A token must be signed with an asymmetric algorithm by one of the issuer's keys, name the configured
//! issuer (`iss`) and audience (`aud`), have a subject (`sub`, no control characters) and be valid now
//! (`exp` and `nbf`, with a minute of leeway for clock skew). What it may do comes from two claims the issuer adds (for instance through a
//! Keycloak or Dex claim mapper): `cp_projects`, a map of project (or `*`) to role, and
//! `cp_platform_admin`, a boolean. A token without them authenticates and may do nothing.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet},
};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::{Principal, Role, Unauthenticated};

/// Keys are fetched again at least this often, so a withdrawn key stops working.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(300);
/// A token naming an unknown key fetches the keys again at most this often: random `kid`s cannot make
/// this process hammer the issuer.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Cached keys are used at most this long after they were fetched, however long the issuer stays away:
/// past it a key the issuer withdrew (a leaked one, say) would otherwise be accepted for ever.
pub const MAX_KEY_STALENESS: Duration = Duration::from_secs(3600);
/// How long a fetch from the issuer may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document or JWKS read (a real one is a few KiB).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where the issuer is and what tokens must be for.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// the issuer's URL, exactly as tokens carry it in `iss`
    pub issuer: String,
    /// the audience tokens must carry in `aud` (this API's client id at the issuer)
    pub audience: String,
    /// the JWKS URL; when absent, the `jwks_uri` of the issuer's discovery document
    pub jwks_url: Option<String>,
    /// keys older than this are fetched again ([`MAX_KEY_AGE`])
    pub max_key_age: Duration,
    /// an unknown `kid` fetches the keys again at most this often ([`MIN_REFETCH_INTERVAL`])
    pub min_refetch_interval: Duration,
    /// keys are not used longer than this after their fetch, even while the issuer is away
    /// ([`MAX_KEY_STALENESS`])
    pub max_key_staleness: Duration,
}

impl OidcConfig {
    /// An issuer and audience, keys found through discovery and refreshed at the default pace.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            max_key_age: MAX_KEY_AGE,
            min_refetch_interval: MIN_REFETCH_INTERVAL,
            max_key_staleness: MAX_KEY_STALENESS,
        }
    }
}

/// Why the issuer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// the discovery document or the JWKS could not be fetched
    #[error("OIDC: fetching {url}: {source}")]
    Fetch {
        /// what was fetched
        url: String,
        /// why it failed
        source: FetchError,
    },
    /// the discovery document names another issuer
    #[error("OIDC: the discovery document of {configured} names the issuer {found}")]
    IssuerMismatch {
        /// the configured issuer
        configured: String,
        /// the issuer the document names
        found: String,
    },
    /// TLS could not be set up
    #[error("OIDC: TLS: {0}")]
    Tls(String),
}

/// The claims this API reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    cp_projects: BTreeMap<String, Role>,
    #[serde(default)]
    cp_platform_admin: bool,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct Keys {
    set: JwkSet,
    /// when `set` was fetched
    fetched: Instant,
    /// when a fetch was last tried
    attempted: Instant,
}

/// Validates JWTs from one issuer.
#[derive(Clone)]
pub struct OidcVerifier(Arc<Inner>);

struct Inner {
    config: OidcConfig,
    jwks_url: String,
    http: HttpClient,
    keys: RwLock<Keys>,
    /// one fetch at a time; concurrent requests with a new `kid` wait for it instead of each fetching
    fetching: Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier").field("issuer", &self.0.config.issuer).finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// Finds the issuer's keys and fetches them once: an issuer that cannot be reached at start stops
    /// the process rather than refusing every caller later.
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        let http = http_client()?;
        let jwks_url = match &config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'));
                let discovery: Discovery = fetch(&http, &url).await?;
                // OpenID Connect Discovery 1.0 section 4.3: the document's issuer must be the one asked.
                if discovery.issuer != config.issuer {
                    return Err(OidcError::IssuerMismatch {
                        configured: config.issuer.clone(),
                        found: discovery.issuer,
                    });
                }
                discovery.jwks_uri
            }
        };
        let set = fetch(&http, &jwks_url).await?;
        let now = Instant::now();
        let keys = RwLock::new(Keys { set, fetched: now, attempted: now });
        Ok(Self(Arc::new(Inner { config, jwks_url, http, keys, fetching: Mutex::new(()) })))
    }

    /// The caller a JWT names, if it is valid.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Unauthenticated> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Unauthenticated::Invalid)?;
        if !is_asymmetric(header.alg) {
            // `none` cannot be decoded at all; HMAC would make the public key a shared secret.
            return Err(Unauthenticated::Invalid);
        }
        let jwk = self.key(header.kid.as_deref()).await.ok_or(Unauthenticated::Invalid)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| Unauthenticated::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.0.config.issuer]);
        validation.set_audience(&[&self.0.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A token not valid yet is not valid (RFC 7519 section 4.1.5); jsonwebtoken checks `nbf` only
        // when asked.
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            tracing::debug!(%error, "JWT refused");
            Unauthenticated::Invalid
        })?;
        let claims = data.claims;
        // `sub` becomes the actor of every event the caller causes, and a message header.
        if claims.sub.is_empty() || claims.sub.chars().any(char::is_control) {
            return Err(Unauthenticated::Invalid);
        }
        Ok(Principal {
            subject: claims.sub,
            token_name: None,
            platform_admin: claims.cp_platform_admin,
            projects: claims.cp_projects,
        })
    }

    /// The key `kid` names. Keys older than `max_key_age` are still used while a refresh runs in the
    /// background (a login never waits for the issuer for a key it has), up to `max_key_staleness`; a
    /// `kid` the cache does not hold, or stale keys, wait for a fetch (one at a time, at most every
    /// `min_refetch_interval`, bounded by the fetch timeout).
    async fn key(&self, kid: Option<&str>) -> Option<Jwk> {
        let config = &self.0.config;
        {
            let keys = self.0.keys.read().await;
            let age = keys.fetched.elapsed();
            if let Some(jwk) = find(&keys.set, kid)
                && age < config.max_key_staleness
            {
                if age >= config.max_key_age {
                    self.refresh_in_background();
                }
                return Some(jwk);
            }
        }
        let _one_fetch = self.0.fetching.lock().await;
        {
            // Another request may have fetched while this one waited, or asked so recently that asking
            // again would only let random `kid`s (or an issuer that is away) drive requests to the issuer.
            let keys = self.0.keys.read().await;
            let fresh = keys.fetched.elapsed() < config.max_key_staleness;
            let found = find(&keys.set, kid).filter(|_| fresh);
            if found.is_some() || keys.attempted.elapsed() < config.min_refetch_interval {
                return found;
            }
        }
        let refreshed = self.refresh().await;
        let keys = self.0.keys.read().await;
        find(&keys.set, kid).filter(|_| refreshed || keys.fetched.elapsed() < config.max_key_staleness)
    }

    /// Fetches the keys; on failure the cached ones stay (until they are stale). Whether it fetched them.
    async fn refresh(&self) -> bool {
        let fetched = fetch::<JwkSet>(&self.0.http, &self.0.jwks_url).await;
        let mut keys = self.0.keys.write().await;
        keys.attempted = Instant::now();
        match fetched {
            Ok(set) => {
                keys.set = set;
                keys.fetched = keys.attempted;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not refresh the OIDC issuer's keys; using the cached ones until they are stale");
                false
            }
        }
    }

    /// Starts a refresh on its own task unless one is under way or one was tried within
    /// `min_refetch_interval`.
    fn refresh_in_background(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_one_fetch) = this.0.fetching.try_lock() else { return };
            if this.0.keys.read().await.attempted.elapsed() < this.0.config.min_refetch_interval {
                return;
            }
            this.refresh().await;
        });
    }
}

/// The key named `kid`, or the only key when the token names none.
fn find(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Why a fetch from the issuer failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// not a URL
    #[error("not a URL: {0}")]
    Url(String),
    /// no answer in time
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// the connection or request failed
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
    /// the body could not be read, or is larger than a real document
    #[error("reading the body: {0}")]
    Body(String),
    /// not an `https` URL (plain HTTP only to a loopback address, for a local issuer)
    #[error("{0} is not an https URL (plain HTTP is accepted from loopback addresses only)")]
    NotHttps(String),
    /// an answer other than 200
    #[error("answered {0}")]
    Status(axum::http::StatusCode),
    /// not the JSON expected
    #[error("not the JSON expected: {0}")]
    Json(#[from] serde_json::Error),
}

async fn fetch<T: serde::de::DeserializeOwned>(http: &HttpClient, url: &str) -> Result<T, OidcError> {
    let get = async {
        let uri: axum::http::Uri =
            url.parse().map_err(|e: axum::http::uri::InvalidUri| FetchError::Url(e.to_string()))?;
        // The keys decide who is who: they come over TLS, or from this machine.
        let loopback = uri.host().is_some_and(|host| {
            host == "localhost"
                || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(FetchError::NotHttps(url.to_owned())),
        }
        let response = http.get(uri).await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let limited = http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT_BYTES);
        let body = http_body_util::BodyExt::collect(limited)
            .await
            .map_err(|e| FetchError::Body(format!("{e} (at most {MAX_DOCUMENT_BYTES} bytes are read)")))?
            .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    };
    match tokio::time::timeout(FETCH_TIMEOUT, get).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(FETCH_TIMEOUT)),
    }
    .map_err(|source| OidcError::Fetch { url: url.to_owned(), source })
}

/// HTTPS with ring (the crypto the rest of the workspace uses) and the system's root certificates; `fetch`
/// allows plain HTTP to loopback addresses only.
fn http_client() -> Result<HttpClient, OidcError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| OidcError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

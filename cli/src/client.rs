//! The API over HTTP: one base URL, the bearer token, and failures as the API's own problem documents.

use hyper::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use wire::Problem;

/// A request the API refused, or could not answer.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    /// HTTP status
    pub(crate) status: StatusCode,
    /// the problem document, when the API sent one
    pub(crate) problem: Option<Problem>,
    /// the body as text, when it was not a problem document
    pub(crate) body: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Some(problem) => {
                write!(f, "{} {}: {}", self.status.as_u16(), problem.code, problem.detail)?;
                for error in &problem.errors {
                    write!(f, "\n  {} ({}): {}", error.field, error.rule, error.detail)?;
                }
                Ok(())
            }
            None => write!(f, "{}: {}", self.status, self.body.trim()),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// A client of one API as one caller.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: HyperClient,
    base: String,
    token: Option<String>,
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// How long one request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Client {
    /// A client of the API at `base` (e.g. `https://cp.example.com`), sending `token` when there is one.
    /// TLS is rustls with the ring provider, as the API's own clients use.
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        // The system's roots (a company CA among them), or Mozilla's where the system has none.
        let https = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)?,
        }
        .https_or_http()
        .enable_http1()
        .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// GET `path` with `query`, parsed as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.send::<(), T>(Method::GET, path, query, None).await
    }

    /// Sends `body` (when there is one) with `method` to `path`, the answer parsed as `T`.
    pub(crate) async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&serde_urlencoded::to_string(query)?);
        }
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(hyper::header::USER_AGENT, concat!("cpctl/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(body)?
            }
            None => Vec::new(),
        };
        let request = request.body(http_body_util::Full::new(bytes::Bytes::from(payload)))?;
        let response = tokio::time::timeout(TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("{method} {url}: no answer within {TIMEOUT:?}"))?
            .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            let problem = serde_json::from_str::<Problem>(&text).ok();
            return Err(ApiFailure { status, problem, body: text.into_owned() }.into());
        }
        let text = if text.is_empty() { "null" } else { &text };
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{method} {url}: unexpected answer: {e}"))
    }
}

/// A path segment, percent-encoded (a CIDR's `/`, a name's odd characters).
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

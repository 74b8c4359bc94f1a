//! The API over HTTP: one base URL, the bearer token, and failures as the API's own problem documents.

use reqwest::{Method, StatusCode};
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
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `base` (e.g. `https://cp.example.com`), sending `token` when there is one.
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cpctl/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
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
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let problem = serde_json::from_str::<Problem>(&text).ok();
            return Err(ApiFailure { status, problem, body: text }.into());
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

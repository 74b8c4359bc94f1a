//! HTTP clients of the benchmarks, authenticated as the API expects.

use api::auth::{ApiTokens, Role, TokenEntry, hash_token, new_token};

/// A fresh platform-admin token and the token set an in-process API accepts it from.
pub(crate) fn in_process_token() -> anyhow::Result<(String, ApiTokens)> {
    let token = new_token();
    let entry = TokenEntry {
        name: "bench".into(),
        sha256: hash_token(&token),
        subject: "benchmark".into(),
        platform_admin: true,
        projects: [("*".to_owned(), Role::Admin)].into(),
    };
    Ok((token, ApiTokens::from_entries(vec![entry])?))
}

/// The token for a running stack: `CP_API_TOKEN` (`./dev up` prints how to set it).
pub(crate) fn running_stack_token() -> anyhow::Result<String> {
    std::env::var("CP_API_TOKEN").map_err(|_| {
        anyhow::anyhow!("set CP_API_TOKEN to an API token of the running stack (`./dev up` prints how)")
    })
}

/// A pooled client that sends `token` as its bearer token on every request.
pub(crate) fn client(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder().pool_max_idle_per_host(128).default_headers(headers).build()?)
}

//! Request parsing that fails with problem+json naming the field and the rule.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body, deserialized with the path of any failing field, plus its raw bytes (for fingerprints).
#[derive(Debug)]
pub struct JsonBody<T> {
    /// the parsed body
    pub value: T,
    /// the raw bytes
    pub raw: Bytes,
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a serde path into a JSON pointer (`config.max_connections` → `/config/max_connections`).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// The name between the first pair of backticks of a serde message (`unknown field `x``).
fn quoted(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

/// Maps a deserialization error to a problem naming the field and the rule.
pub fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    let message = inner.to_string();
    // serde_json appends " at line L column C"; keep the sentence only.
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    let mut field = pointer(error.path());
    if field == "/?" || field.is_empty() {
        field.clear();
    }
    use serde_json::error::Category;
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest {
            code: "malformed_json",
            detail: format!(
                "request body is not valid JSON: {message} (line {}, column {})",
                inner.line(),
                inner.column()
            ),
            errors: vec![],
        },
        Category::Data => {
            // serde_path_to_error's path already ends at an unknown field, but stops before a missing one.
            let rule = if message.starts_with("unknown field") {
                "unknown_field"
            } else if message.starts_with("missing field") {
                field = format!("{field}/{}", quoted(&message).unwrap_or("?"));
                "required"
            } else if message.starts_with("unknown variant") {
                "one_of"
            } else {
                "type"
            };
            if field.is_empty() {
                field.push('/');
            }
            ApiError::Unprocessable {
                code: "validation_failed",
                detail: format!("{field}: {message}"),
                errors: vec![FieldError { field, rule: rule.into(), detail: message }],
            }
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::BadRequest {
                    code: "unreadable_body",
                    detail: rejection.body_text(),
                    errors: vec![],
                }
            }
        })?;
        // Every body of this API is a JSON object. serde would also build a struct from an array of its
        // fields in order (`[null, null]` as an empty change), so anything else is refused first.
        let first = raw.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::field("", "type", "the body must be a JSON object"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&raw);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| json_error(&e))?;
        deserializer.end().map_err(|e| ApiError::BadRequest {
            code: "malformed_json",
            detail: format!("request body has trailing data: {e}"),
            errors: vec![],
        })?;
        Ok(Self { value, raw })
    }
}

fn header_error(name: &str, rule: &str, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    ApiError::BadRequest {
        code: "invalid_header",
        detail: format!("{name}: {detail}"),
        errors: vec![FieldError { field: name.to_owned(), rule: rule.to_owned(), detail }],
    }
}

/// `If-Match: "7"` → `Some(7)`; `*` or absent → `None`.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value
        .to_str()
        .map_err(|_| header_error("If-Match", "etag", "must be an ETag returned by this API, such as \"3\""))?
        .trim();
    // RFC 9110: `If-Match = "*" / #entity-tag`; an empty list sets no condition.
    if text == "*" || text.is_empty() {
        return Ok(None);
    }
    // RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; ours hold the version.
    text.strip_prefix("W/")
        .unwrap_or(text)
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            header_error("If-Match", "etag", "must be an ETag returned by this API, such as \"3\"")
        })
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(header_error(
            "Idempotency-Key",
            "visible_ascii_1_to_255",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(text.to_owned()))
}

/// The `ETag` of an instance version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Header on reads: the `Cp-Stream-Sequence` a write returned. The read waits (bounded) until this API
/// replica's read model has applied it, so a client reads its own writes through any replica.
pub const MIN_SEQUENCE: &str = "cp-min-sequence";

/// The `Cp-Min-Sequence` header, if present.
pub fn min_sequence(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    sequence_header(
        headers,
        MIN_SEQUENCE,
        "Cp-Min-Sequence",
        "must be a Cp-Stream-Sequence returned by a write",
    )
}

/// Largest stream sequence a header may carry: JetStream's sequences are unsigned 64-bit, but the
/// document states them as OpenAPI `int64`, which clients in most languages read as signed.
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// A header holding a stream sequence (`Cp-Min-Sequence`, `Last-Event-ID`): a decimal from 0 to
/// [`MAX_SEQUENCE`].
pub fn sequence_header(
    headers: &HeaderMap,
    header: &str,
    name: &str,
    rule: &str,
) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header) else { return Ok(None) };
    let parsed = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
    match parsed {
        Some(sequence) if sequence <= MAX_SEQUENCE => Ok(Some(sequence)),
        Some(_) => Err(header_error(name, "stream_sequence", format!("must be at most {MAX_SEQUENCE}"))),
        None => Err(header_error(name, "stream_sequence", rule)),
    }
}

/// Most items a page may hold.
pub const MAX_PAGE_SIZE: usize = 500;
/// Items in a page when the client names no `limit`.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// A list's paging query, checked: `limit` from 1 to [`MAX_PAGE_SIZE`] (default [`DEFAULT_PAGE_SIZE`]),
/// and `page_token` one this API returned (the id of the last item of the previous page).
pub fn page(limit: Option<usize>, page_token: Option<&str>) -> Result<(usize, Option<uuid::Uuid>), ApiError> {
    let limit = page_limit(limit)?;
    let after = match page_token {
        Some(token) => Some(token.parse::<uuid::Uuid>().map_err(|_| ApiError::BadRequest {
            code: "invalid_query",
            detail: "page_token is not one this API returned".into(),
            errors: vec![],
        })?),
        None => None,
    };
    Ok((limit, after))
}

/// A page size: `limit`, from 1 to the maximum, or the default.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            detail: format!("limit must be from 1 to {MAX_PAGE_SIZE}"),
            errors: vec![crate::error::FieldError {
                field: "limit".into(),
                rule: "range".into(),
                detail: format!("from 1 to {MAX_PAGE_SIZE}"),
            }],
        });
    }
    Ok(limit)
}

//! The head of an engine's answer: what of it reaches the client, and engine errors.
//!
//! Streams are marked uncacheable and unbuffered, compressed streams are refused (Bridge never
//! inflates), and an engine's error (non-2xx) is read, bounded in size and time, and normalised
//! to the OpenAI envelope. The engine's hop-by-hop and misleading headers never get here: the
//! engine side drops them as it reads the head ([`crate::headers::ENGINE_ONLY`]).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;

use super::lifetime::EngineBody;
use crate::error::ApiError;
use crate::headers::ACCEL_BUFFERING;

/// Largest engine error body read; past it the message is cut.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// Time allowed to read an engine's error body.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the engine compressed its answer despite `accept-encoding: identity`.
pub fn is_compressed(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
}

/// A stream the engine compressed: Bridge cannot scan it (and never inflates).
pub fn compressed_stream() -> ApiError {
    ApiError::bad_gateway(
        "the engine compressed its answer although Bridge asked for none (accept-encoding: identity)",
    )
    .with_code("upstream_compressed")
}

/// Headers of every relayed stream: no caching, and no buffering by a proxy in front of Bridge
/// (nginx honours `x-accel-buffering`), so events pass straight through.
pub fn mark_sse(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
}

/// Reads an engine's error body (bounded in size and time) into an OpenAI-shaped error.
pub async fn engine_error(status: StatusCode, headers: &HeaderMap, body: EngineBody) -> ApiError {
    let bytes = read_prefix(body, MAX_ERROR_BODY).await;
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The engine rejected *Bridge's* credentials: relaying 401 would tell the client its
        // own key is wrong, which it is not; and retrying will not help.
        let engine = ApiError::from_engine(status, &bytes);
        let mut error = ApiError::bad_gateway(format!(
            "the engine rejected Bridge's credentials ({status}: {}); check the deployment's api_key_env",
            engine.message
        ))
        .with_code("upstream_auth_failed");
        error.should_retry = Some(false);
        return error;
    }
    let mut error = ApiError::from_engine(status, &bytes);
    // An engine that is busy says when to come back; the SDKs honour it.
    error.retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    error
}

/// Up to `limit` bytes of `body`, within [`ERROR_BODY_TIMEOUT`]: a long or slow error body is
/// cut, never lost.
async fn read_prefix(mut body: EngineBody, limit: usize) -> Bytes {
    let mut out = Vec::new();
    let read = async {
        while out.len() < limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let take = data.len().min(limit - out.len());
                        out.extend_from_slice(&data[..take]);
                    }
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIMEOUT, read).await;
    Bytes::from(out)
}

/// Engine error bodies, read into the envelope.
impl ApiError {
    /// Normalises an error body from an engine into the envelope, keeping its message.
    /// Understands the OpenAI shape (with integer or string `code`), vLLM's older flat shape
    /// `{"object": "error", "message": ...}`, `{"error": "text"}`, `{"detail": ...}` (FastAPI),
    /// and plain text.
    pub fn from_engine(status: StatusCode, body: &[u8]) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let fallback_kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let mut error = Self::new(status, fallback_kind, "");
        error.should_retry = None;
        let object = match &parsed {
            Some(serde_json::Value::Object(map)) => match map.get("error") {
                Some(serde_json::Value::Object(inner)) => Some(inner),
                Some(serde_json::Value::String(text)) => {
                    error.message = Cow::Owned(text.clone());
                    None
                }
                _ => Some(map),
            },
            _ => None,
        };
        if let Some(obj) = object {
            error.message = match obj.get("message").or_else(|| obj.get("detail")) {
                Some(serde_json::Value::String(s)) => Cow::Owned(s.clone()),
                Some(other) => Cow::Owned(other.to_string()),
                None => Cow::Borrowed(""),
            };
            if let Some(serde_json::Value::String(kind)) = obj.get("type") {
                error.kind = Cow::Owned(kind.clone());
            }
            error.param = scalar_string(obj.get("param")).map(Cow::Owned);
            error.code = scalar_string(obj.get("code")).map(Cow::Owned);
        } else if parsed.is_none() {
            let text = String::from_utf8_lossy(body);
            error.message = Cow::Owned(text.trim().chars().take(4096).collect());
        }
        if error.message.is_empty() {
            error.message = Cow::Owned(format!("the engine answered {status} with no message"));
        }
        error
    }
}

/// A JSON scalar as a string (integers become their decimal form), null and containers as None.
fn scalar_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

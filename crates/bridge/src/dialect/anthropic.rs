//! Anthropic's Messages API dialect (`POST messages`, `POST messages/count_tokens`), as the
//! Anthropic SDKs send and read it. vLLM and llama-server serve it at `/v1/messages`, and the
//! Anthropic SDK appends `/v1/messages` to its base URL, so clients point it at Bridge's root.
//!
//! - Auth: `x-api-key` (what the SDK sends) as well as `Authorization`; `anthropic-version`
//!   and `anthropic-beta` reach the engine.
//! - Errors, Bridge's own and the engine's: `{"type": "error", "error": {"type", "message"}}`
//!   with the type the status calls for, so the SDK raises `BadRequestError`,
//!   `AuthenticationError`, `NotFoundError`, …
//! - Streams: typed events ended by `message_stop`; a stream that breaks gets `event: error`
//!   with that envelope (the SDK raises on it). Usage: `input_tokens` from `message_start`,
//!   `output_tokens` from the last `message_delta`.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;

use super::typed::{number_after, Grammar, Seen, TypedEvents};
use super::Dialect;
use crate::error::ApiError;
use crate::observe::usage::Key;
use crate::relay::lifetime::EngineBody;
use crate::relay::stream::StreamRelay;
use crate::relay::ResBody;

/// Anthropic's Messages API.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

impl Dialect for Anthropic {
    fn takes_x_api_key(&self) -> bool {
        true
    }

    fn relay_stream(
        &self,
        body: EngineBody,
        _strip_usage: bool,
        heartbeat: Option<Duration>,
    ) -> ResBody {
        let adapter = TypedEvents::new(MessageEvents);
        ResBody::stream(StreamRelay::new(body, adapter, None, heartbeat))
    }

    fn error_response(&self, error: ApiError) -> Response<ResBody> {
        let body = envelope(&error);
        error.into_response_with(body)
    }

    fn stream_error(&self, error: &ApiError) -> Bytes {
        let mut event = b"event: error\ndata: ".to_vec();
        event.extend_from_slice(&envelope(error));
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }
}

/// The Messages API's error types.
const TYPES: [&str; 9] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

/// The error type an Anthropic client expects for `status`.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `error` in the Messages API's envelope: the engine's own type when it is one of the API's,
/// else the one its status calls for.
pub fn envelope(error: &ApiError) -> Bytes {
    let kind = TYPES
        .iter()
        .find(|t| **t == error.kind)
        .copied()
        .unwrap_or_else(|| error_type(error.status));
    let value = json!({"type": "error", "error": {"type": kind, "message": error.message}});
    Bytes::from(value.to_string())
}

static INPUT_TOKENS: Key = Key::new(b"\"input_tokens\"");
static OUTPUT_TOKENS: Key = Key::new(b"\"output_tokens\"");

/// The Messages API's stream events, as far as Bridge needs them.
#[derive(Debug, Default)]
pub struct MessageEvents;

impl Grammar for MessageEvents {
    fn event(&mut self, kind: &[u8], event: &[u8]) -> Seen {
        match kind {
            b"message_start" | b"message_delta" => Seen {
                prompt: number_after(event, &INPUT_TOKENS),
                completion: number_after(event, &OUTPUT_TOKENS),
                ..Seen::default()
            },
            b"content_block_delta" => Seen {
                content: true,
                ..Seen::default()
            },
            b"message_stop" | b"error" => Seen {
                terminal: true,
                ..Seen::default()
            },
            _ => Seen::default(),
        }
    }

    fn error_events(&self, error: &ApiError) -> Bytes {
        Anthropic.stream_error(error)
    }
}

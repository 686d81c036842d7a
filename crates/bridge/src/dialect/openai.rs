//! The OpenAI dialect: chat completions, completions and embeddings, as the official SDKs send
//! and read them.
//!
//! - Routing: `baseten` in the body (what `extra_body` produces), or `model =
//!   "baseten/{model_id}[/{deployment_id}]"`, or the model in the URL ([`crate::stage::route`]).
//! - Streams: `data:` events ending with `data: [DONE]`; failures end with the error envelope
//!   in band, then `[DONE]` ([`stream::SseScanner`]).
//! - Errors: `{"error": {"message", "type", "param", "code"}}` with a string `code`.
//! - Usage: `usage.prompt_tokens` / `completion_tokens`.

pub mod stream;

use std::time::Duration;

use bytes::Bytes;

use super::Dialect;
use crate::error::ApiError;
use crate::observe::usage::{usage_in_json_tail, JsonUsage};
use crate::relay::lifetime::EngineBody;
use crate::relay::stream::StreamRelay;
use crate::relay::ResBody;
use stream::SseScanner;

/// OpenAI's API.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi;

impl Dialect for OpenAi {
    fn injects_usage(&self) -> bool {
        true
    }

    fn relay_stream(
        &self,
        body: EngineBody,
        strip_usage: bool,
        heartbeat: Option<Duration>,
    ) -> ResBody {
        ResBody::stream(StreamRelay::new(
            body,
            SseScanner::new(strip_usage),
            None,
            heartbeat,
        ))
    }

    fn json_usage(&self) -> JsonUsage {
        usage_in_json_tail
    }

    fn stream_error(&self, error: &ApiError) -> Bytes {
        error.sse_event()
    }
}

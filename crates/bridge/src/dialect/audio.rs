//! Audio transcriptions and translations: OpenAI's API, as a multipart form.
//!
//! Routing comes from form fields ([`crate::stage::form`]); every other part, the audio file
//! included, reaches the engine byte for byte. Answers (JSON, text, SRT or VTT) are relayed as
//! they are; `stream=true` transcriptions are relayed as OpenAI's SSE. Errors are the OpenAI
//! envelope.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::openai::stream::SseScanner;
use super::Dialect;
use crate::error::ApiError;
use crate::relay::lifetime::EngineBody;
use crate::relay::stream::StreamRelay;
use crate::relay::ResBody;
use crate::stage::form::route_form;
use crate::stage::route::RoutedBody;

/// OpenAI's audio routes.
#[derive(Debug, Clone, Copy)]
pub struct Audio;

impl Dialect for Audio {
    fn route(
        &self,
        body: &[u8],
        headers: &HeaderMap,
        _path_model: Option<&str>,
    ) -> Result<RoutedBody, ApiError> {
        route_form(body, headers)
    }

    fn takes_form(&self) -> bool {
        true
    }

    fn relay_stream(
        &self,
        body: EngineBody,
        _strip_usage: bool,
        heartbeat: Option<Duration>,
    ) -> ResBody {
        ResBody::stream(StreamRelay::new(
            body,
            SseScanner::new(false),
            None,
            heartbeat,
        ))
    }

    fn stream_error(&self, error: &ApiError) -> Bytes {
        error.sse_event()
    }
}

//! Dialects: the API the client speaks, one file per dialect.
//!
//! A dialect is everything about a request that depends on the client's API rather than on the
//! engine: where its routing fields are, its stream grammar and terminal event, its error
//! envelope, and where its answers report token usage. Today Bridge speaks OpenAI's API
//! ([`openai`]); each further API (the Responses API, Anthropic Messages, multipart audio) is
//! one more implementation of [`Dialect`], chosen for its routes in [`of`], the one place that
//! maps a route to a dialect.

pub mod openai;

use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::config::registry::Endpoint;
use crate::error::ApiError;
use crate::observe::usage::JsonUsage;
use crate::relay::lifetime::EngineBody;
use crate::relay::ResBody;
use crate::stage::route::RoutedBody;

/// What one client API looks like on the wire.
pub trait Dialect: Sync {
    /// Where the request says where it goes: scans `body` (or takes `path_model`, the model
    /// its URL names) and notes what forwarding must cut or replace.
    fn route(&self, body: &[u8], path_model: Option<&str>) -> Result<RoutedBody, ApiError>;

    /// An engine's stream in this dialect, relayed event by event: its grammar, its terminal
    /// event, in-band errors. `strip_usage`: Bridge asked the engine for usage the client did
    /// not ask for. `heartbeat`: comments after this much engine silence.
    fn relay_stream(
        &self,
        body: EngineBody,
        strip_usage: bool,
        heartbeat: Option<Duration>,
    ) -> ResBody;

    /// How to read token usage at the end of a whole (JSON) answer.
    fn json_usage(&self) -> JsonUsage;

    /// `error` in this dialect's envelope, as the client's SDK parses it.
    fn error_response(&self, error: ApiError) -> Response<ResBody>;

    /// `error` as the in-band events that end a stream, for failures after a 200.
    fn stream_error(&self, error: &ApiError) -> Bytes;
}

/// The dialect of a client route: the one place that decides it.
pub fn of(endpoint: Endpoint) -> &'static dyn Dialect {
    match endpoint {
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Models
        | Endpoint::Predict => &openai::OpenAi,
    }
}

//! Dialects: the API the client speaks, one file per dialect.
//!
//! A dialect is everything about a request that depends on the client's API rather than on the
//! engine: where its routing fields are, its stream grammar and terminal event, its error
//! envelope, and where its answers report token usage. Bridge speaks OpenAI's API ([`openai`]),
//! the Responses API ([`responses`]), Anthropic's Messages API ([`anthropic`]) and OpenAI's
//! multipart audio routes ([`audio`]); [`of`] is the
//! one place that maps a route to its dialect. [`typed`] relays the typed event streams of the
//! last two.

pub mod anthropic;
pub mod audio;
pub mod openai;
pub mod responses;
pub mod typed;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};

use crate::config::endpoint::{Endpoint, Speaks};
use crate::error::ApiError;
use crate::observe::usage::{io_usage_in_json_tail, JsonUsage};
use crate::relay::lifetime::EngineBody;
use crate::relay::ResBody;
use crate::stage::route::{route, route_by_path, RoutedBody};

/// What one client API looks like on the wire.
pub trait Dialect: Sync {
    /// Where the request says where it goes: `baseten` or the `baseten/...` model form in
    /// `body`, else the routing headers (or `path_model`, the model its URL names); notes what
    /// forwarding must cut or replace.
    fn route(
        &self,
        body: &[u8],
        headers: &HeaderMap,
        path_model: Option<&str>,
    ) -> Result<RoutedBody, ApiError> {
        match path_model {
            Some(model_id) => route_by_path(body, model_id),
            None => route(body, headers),
        }
    }

    /// Whether its clients may send their key as `x-api-key` (besides `Authorization`).
    fn takes_x_api_key(&self) -> bool {
        false
    }

    /// Whether its bodies are multipart forms rather than JSON.
    fn takes_form(&self) -> bool {
        false
    }

    /// Whether Bridge may add `stream_options.include_usage` to count a stream's tokens.
    fn injects_usage(&self) -> bool {
        false
    }

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
    fn json_usage(&self) -> JsonUsage {
        io_usage_in_json_tail
    }

    /// `error` in this dialect's envelope, as the client's SDK parses it.
    fn error_response(&self, error: ApiError) -> Response<ResBody> {
        error.into_response()
    }

    /// `error` as the in-band events that end a stream, for failures after a 200.
    fn stream_error(&self, error: &ApiError) -> Bytes;
}

/// The dialect of a client route: the one place that decides it.
pub fn of(endpoint: Endpoint) -> &'static dyn Dialect {
    match endpoint.speaks() {
        Speaks::OpenAi => &openai::OpenAi,
        Speaks::Responses => &responses::Responses,
        Speaks::Anthropic => &anthropic::Anthropic,
        Speaks::Audio => &audio::Audio,
    }
}

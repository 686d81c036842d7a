//! The Responses API dialect (`POST responses`), as OpenAI's SDKs send and read it.
//!
//! - Routing: as OpenAI's (`baseten` in the body, the `baseten/...` model form, or headers).
//! - Streams: `event: <type>` + `data: {...}` pairs, ended by `response.completed`,
//!   `response.incomplete` or `response.failed`, with no `[DONE]`. A stream that breaks or
//!   ends without one gets an `event: error` whose data is the API's error event: `{"type":
//!   "error", "code", "message", "param": null, "sequence_number"}`.
//! - Errors before streaming: the OpenAI envelope. Usage: `usage.input_tokens` and
//!   `output_tokens`, of a whole answer or of the final event's `response`. Bridge never adds
//!   `stream_options` here (the API has none).

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::typed::{number_after, Grammar, Seen, TypedEvents};
use super::Dialect;
use crate::error::ApiError;
use crate::observe::usage::{io_usage_in_json_tail, Key};
use crate::relay::lifetime::{EngineBody, Learner};
use crate::relay::stream::StreamRelay;
use crate::relay::ResBody;

/// OpenAI's Responses API.
#[derive(Debug, Clone, Copy)]
pub struct Responses;

impl Dialect for Responses {
    fn relay_stream(
        &self,
        mut body: EngineBody,
        _strip_usage: bool,
        heartbeat: Option<Duration>,
    ) -> ResBody {
        let events = ResponseEvents {
            learner: body.take_learner(),
            ..ResponseEvents::default()
        };
        let adapter = TypedEvents::new(events);
        ResBody::stream(StreamRelay::new(body, adapter, None, heartbeat))
    }

    fn stream_error(&self, error: &ApiError) -> Bytes {
        error_event(error, 0)
    }
}

/// Every Responses stream event carries one.
static SEQUENCE_NUMBER: Key = Key::new(b"\"sequence_number\"");

/// The Responses API's stream events, as far as Bridge needs them.
#[derive(Debug, Default)]
pub struct ResponseEvents {
    /// The last event's `sequence_number`: an error Bridge adds comes next.
    last_sequence: Option<u64>,
    /// Remembers where the response is made, from `response.created` (before the client can
    /// ask for it by its id).
    learner: Option<Learner>,
}

impl Grammar for ResponseEvents {
    fn event(&mut self, kind: &[u8], event: &[u8]) -> Seen {
        if let Some(n) = number_after(event, &SEQUENCE_NUMBER) {
            self.last_sequence = Some(n);
        }
        if kind == b"response.created" {
            if let Some(learner) = self.learner.take() {
                learner.learn_from(event);
            }
        }
        match kind {
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                let usage = io_usage_in_json_tail(event);
                Seen {
                    terminal: true,
                    prompt: usage.map(|u| u.0),
                    completion: usage.map(|u| u.1),
                    ..Seen::default()
                }
            }
            // The engine's own error event ends the answer; the client's SDK sees it.
            b"error" => Seen {
                terminal: true,
                ..Seen::default()
            },
            kind => Seen {
                content: kind.ends_with(b".delta"),
                ..Seen::default()
            },
        }
    }

    fn error_events(&self, error: &ApiError) -> Bytes {
        error_event(error, self.last_sequence.map_or(0, |n| n + 1))
    }
}

/// `error` as the API's `error` stream event.
fn error_event(error: &ApiError, sequence_number: u64) -> Bytes {
    let data = json!({
        "type": "error",
        "code": error.label(),
        "message": error.message,
        "param": null,
        "sequence_number": sequence_number,
    });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

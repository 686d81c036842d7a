//! The simulator's predict mode: a model with only a plain predict endpoint, for the predict
//! adapter's tests and demo. `POST /predict[/{shape}]` takes `{"messages" | "prompt", "stream"}`
//! and answers the text `You said: <last input>. Ünïcödé ✓ 👋🏽` as:
//!
//! | shape | not streaming | streaming |
//! |---|---|---|
//! | (none) | a JSON string | raw bytes, `application/octet-stream`, cut every 5 bytes (so characters split) |
//! | `object` | `{"output": text, "usage": …}` | SSE events `{"output": piece}` |
//! | `text` | `text/plain` | raw bytes, `text/plain` |
//! | `sse` | a JSON string | SSE events that are JSON strings |
//! | `error` | 500 `{"error": "simulated model failure"}` | the same |
//! | `echo` | the predict body it received, as a JSON string | — |
//! | `break` | a JSON string | raw bytes that break off after two pieces |

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use super::{full, json_response, split, SimBody};
use crate::body::BoxError;

/// Raw stream pieces are this many bytes, so multi-byte characters are cut.
const RAW_PIECE_BYTES: usize = 5;

/// The answer for the predict body `body` (already parsed).
pub fn answer(shape: &str, body: &Value, gap: Duration) -> Response<SimBody> {
    if shape == "error" {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "simulated model failure"}),
        );
    }
    let text = match shape {
        "echo" => body.to_string(),
        _ => reply(body),
    };
    if body["stream"] != true {
        return match shape {
            "object" => json_response(
                StatusCode::OK,
                &json!({"output": text, "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
            ),
            "text" => with_type(full(Bytes::from(text)), "text/plain; charset=utf-8"),
            _ => json_response(StatusCode::OK, &json!(text)),
        };
    }
    let (pieces, content_type, abort_after): (Vec<Bytes>, _, _) = match shape {
        "sse" | "object" => {
            let events = split(&text, 6).into_iter().map(|piece| {
                let data = if shape == "sse" {
                    json!(piece)
                } else {
                    json!({"output": piece})
                };
                Bytes::from(format!("data: {data}\n\n"))
            });
            (events.collect(), "text/event-stream", None)
        }
        _ => {
            let bytes = Bytes::from(text);
            let pieces = (0..bytes.len())
                .step_by(RAW_PIECE_BYTES)
                .map(|at| bytes.slice(at..(at + RAW_PIECE_BYTES).min(bytes.len())))
                .collect();
            let content_type = match shape {
                "text" => "text/plain; charset=utf-8",
                _ => "application/octet-stream",
            };
            (pieces, content_type, (shape == "break").then_some(2))
        }
    };
    let stream = futures_util::stream::unfold(
        (pieces.into_iter().enumerate(), false),
        move |(mut it, stopped)| async move {
            if stopped {
                return None;
            }
            let (i, piece) = it.next()?;
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if abort_after == Some(i) {
                return Some((Err(BoxError::from("simulated model crash")), (it, true)));
            }
            Some((Ok(Frame::data(piece)), (it, false)))
        },
    );
    with_type(BoxBody::new(StreamBody::new(stream)), content_type)
}

/// The text the simulated model answers: it repeats the last input, then characters of every
/// UTF-8 length.
pub fn reply(body: &Value) -> String {
    let input = match &body["messages"] {
        Value::Array(messages) => messages
            .last()
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default(),
        _ => match &body["prompt"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    };
    format!("You said: {input}. Ünïcödé ✓ 👋🏽")
}

fn with_type(body: SimBody, content_type: &'static str) -> Response<SimBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

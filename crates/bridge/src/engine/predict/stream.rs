//! Stream side of the predict adapter: a model's text stream as `chat.completion.chunk` (or
//! streamed `text_completion`) events, each delta forwarded as soon as its bytes arrive.
//!
//! Raw streams (`application/octet-stream`, `text/plain`, anything not SSE) carry text with no
//! framing, cut anywhere, even inside a multi-byte character: [`Utf8Carry`] holds the incomplete
//! tail of a chunk for the next one, so no character is ever split or replaced. SSE streams are
//! reassembled into events first; each event's data is text, a JSON string, or an object with
//! the text under `output_key`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{Context, Kind};
use crate::error::ApiError;
use crate::relay::stream::StreamAdapter;
use crate::sse::{event_end, joined_data, MAX_EVENT_BYTES};

/// Writes the events of one adapted stream. The parts shared by every chunk are rendered once.
#[derive(Debug)]
pub struct ChunkWriter {
    kind: Kind,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[`: optional fields the
    /// schema does not let be null (`system_fingerprint`) are left out, not sent as null.
    head: String,
    /// `]` (with `,"usage":null` when a usage chunk follows) `}` and the blank line.
    tail: &'static str,
}

impl ChunkWriter {
    /// Chunks for the answer to the request `context` describes.
    pub fn new(context: &Context) -> Self {
        let head = format!(
            "data: {{\"id\":{},\"object\":\"{}\",\"created\":{},\"model\":{},\"choices\":[",
            json_string(&context.id),
            context.chunk_object(),
            context.created,
            json_string(&context.model),
        );
        let tail = if context.include_usage {
            "],\"usage\":null}\n\n"
        } else {
            "]}\n\n"
        };
        ChunkWriter {
            kind: context.kind,
            head,
            tail,
        }
    }

    fn event(&self, choice: &str) -> Bytes {
        let mut out = String::with_capacity(self.head.len() + choice.len() + self.tail.len());
        out.push_str(&self.head);
        out.push_str(choice);
        out.push_str(self.tail);
        Bytes::from(out)
    }

    /// The first chunk of a chat stream: the assistant role (completions have none).
    pub fn role(&self) -> Option<Bytes> {
        (self.kind == Kind::Chat).then(|| {
            self.event(r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#)
        })
    }

    /// A content delta.
    pub fn content(&self, text: &str) -> Bytes {
        let text = json_string(text);
        self.event(&match self.kind {
            Kind::Chat => format!(
                r#"{{"index":0,"delta":{{"content":{text}}},"logprobs":null,"finish_reason":null}}"#
            ),
            Kind::Completion => {
                format!(r#"{{"text":{text},"index":0,"logprobs":null,"finish_reason":null}}"#)
            }
        })
    }

    /// The last content chunk, with `finish_reason`.
    pub fn finish(&self) -> Bytes {
        self.event(match self.kind {
            Kind::Chat => r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
            Kind::Completion => r#"{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}"#,
        })
    }

    /// The usage chunk: no choices, `usage` set.
    pub fn usage(&self, usage: &Value) -> Bytes {
        let head = self.head.as_str();
        Bytes::from(format!("{head}],\"usage\":{usage}}}\n\n"))
    }

    /// Everything after the content: finish, usage when asked for, `[DONE]`.
    pub fn end(&self, include_usage: bool, usage: &Value, out: &mut VecDeque<Bytes>) {
        out.push_back(self.finish());
        if include_usage {
            out.push_back(self.usage(usage));
        }
        out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Usage when the model reports none: Bridge has no tokenizer for predict models, and zeros
/// say "not counted" where an estimate would pass for a measurement.
pub fn zero_usage() -> Value {
    json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
}

/// Prompt and completion tokens of a usage object.
pub fn tokens(usage: &Value) -> Option<(u64, u64)> {
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    usage
        .is_object()
        .then(|| (count("prompt_tokens"), count("completion_tokens")))
}

/// Decodes UTF-8 across chunk boundaries: an incomplete character at the end of a chunk waits
/// for the rest. Bytes that can never be UTF-8 are an error: Bridge never changes a model's
/// text (a decoder's U+FFFD would), so the stream ends with `upstream_invalid_utf8` instead.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

/// Bytes that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Carry {
    /// The text completed by `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Result<String, InvalidUtf8> {
        let joined;
        let bytes = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.pending);
            &joined[..]
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            // An incomplete character at the end: kept for the next chunk.
            Err(e) if e.error_len().is_none() => {
                let (valid, after) = bytes.split_at(e.valid_up_to());
                let text = std::str::from_utf8(valid).map_err(|_| InvalidUtf8)?;
                let text = text.to_string();
                self.pending = after.to_vec();
                Ok(text)
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// At the end of the stream: a character that never completed is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        match std::mem::take(&mut self.pending).is_empty() {
            true => Ok(()),
            false => Err(InvalidUtf8),
        }
    }
}

/// How the model frames its stream.
#[derive(Debug)]
enum Framing {
    Raw(Utf8Carry),
    Sse(BytesMut),
}

/// A model's stream, adapted to OpenAI chunk events as it arrives (driven by
/// [`StreamRelay`](crate::relay::stream::StreamRelay)).
#[derive(Debug)]
pub struct PredictEvents {
    framing: Framing,
    writer: ChunkWriter,
    context: Context,
    /// The model's own usage, if its SSE events carried one.
    usage: Option<Value>,
    /// Content events written since the record last asked.
    events: u64,
    /// How much of the SSE buffer was already searched for an event end.
    scanned: usize,
}

impl PredictEvents {
    /// The adapter, and the events to send before anything arrives (the role chunk).
    pub fn new(context: Context, sse: bool) -> (Self, Option<Bytes>) {
        let writer = ChunkWriter::new(&context);
        let first = writer.role();
        let framing = if sse {
            Framing::Sse(BytesMut::new())
        } else {
            Framing::Raw(Utf8Carry::default())
        };
        let adapter = PredictEvents {
            framing,
            writer,
            context,
            usage: None,
            events: 0,
            scanned: 0,
        };
        (adapter, first)
    }

    fn push_text(&mut self, text: &str, out: &mut VecDeque<Bytes>) {
        if !text.is_empty() {
            self.events += 1;
            out.push_back(self.writer.content(text));
        }
    }

    /// One SSE event from the model.
    fn event(&mut self, event: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), ApiError> {
        let data = joined_data(event);
        // No data (a comment, a field-only event): nothing to say. `[DONE]`: the end is marked
        // by the body ending.
        if data.is_empty() || data.trim_ascii() == b"[DONE]" {
            return Ok(());
        }
        let text = match serde_json::from_slice::<Value>(&data) {
            Ok(Value::String(text)) => text,
            Ok(Value::Object(map)) => {
                if map.contains_key("error") {
                    return Err(ApiError::from_engine(http::StatusCode::BAD_GATEWAY, &data));
                }
                if let Some(usage) = map.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(usage.clone());
                }
                match map.get(&self.context.output_key) {
                    Some(Value::String(text)) => text.clone(),
                    None if map.contains_key("usage") => String::new(),
                    _ => {
                        return Err(ApiError::bad_gateway(format!(
                            "the model sent a stream event without a string '{}'; set the deployment's predict.output_key",
                            self.context.output_key
                        ))
                        .with_code("upstream_bad_event"))
                    }
                }
            }
            // Plain text, or JSON of another kind: the data is the text.
            _ => String::from_utf8(data).map_err(|_| ApiError::upstream_invalid_utf8())?,
        };
        self.push_text(&text, out);
        Ok(())
    }
}

impl StreamAdapter for PredictEvents {
    fn take_events(&mut self) -> u64 {
        std::mem::take(&mut self.events)
    }

    fn take_usage(&mut self) -> Option<(u64, u64)> {
        self.usage.as_ref().and_then(tokens)
    }

    fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ApiError> {
        let events = match &mut self.framing {
            Framing::Raw(carry) => {
                let text = carry
                    .push(&chunk)
                    .map_err(|_| ApiError::upstream_invalid_utf8())?;
                self.push_text(&text, out);
                return Ok(());
            }
            Framing::Sse(buffer) => {
                buffer.extend_from_slice(&chunk);
                let mut events = Vec::new();
                // Resume where the last search stopped (less the 3 bytes an end may span), so
                // an event trickling in byte by byte is not searched again from its start.
                let mut from = self.scanned.saturating_sub(3);
                while let Some(end) = event_end(buffer, from) {
                    events.push(buffer.split_to(end).freeze());
                    from = 0;
                }
                self.scanned = buffer.len();
                if buffer.len() > MAX_EVENT_BYTES {
                    return Err(ApiError::bad_gateway(format!(
                        "the model sent a stream event larger than {MAX_EVENT_BYTES} bytes"
                    ))
                    .with_code("upstream_event_too_large"));
                }
                events
            }
        };
        for event in events {
            self.event(&event, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        match &mut self.framing {
            Framing::Raw(carry) => {
                if carry.finish().is_err() {
                    self.fail(ApiError::upstream_invalid_utf8(), out);
                    return;
                }
            }
            Framing::Sse(buffer) => {
                // A last event without its blank line is still whole: the HTTP body ended
                // cleanly.
                let last = buffer.split().freeze();
                if let Err(error) = self.event(&last, out) {
                    self.fail(error, out);
                    return;
                }
            }
        }
        let usage = self.usage.take().unwrap_or_else(zero_usage);
        self.writer.end(self.context.include_usage, &usage, out);
    }
}

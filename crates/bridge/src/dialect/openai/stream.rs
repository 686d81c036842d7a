//! The OpenAI stream adapter: engine SSE relayed as OpenAI clients expect it.
//!
//! Engine chunks do not line up with event boundaries, so anything that inspects a stream must
//! reassemble events first. The scanner forwards each run of complete events as one zero-copy
//! slice of the chunk it arrived in (no re-chunking of normal events), holds back only an
//! incomplete trailing event, and looks at each event just enough to notice two things:
//! the end marker `data: [DONE]`, and an engine's own error event, which it rewrites into the
//! OpenAI envelope with a string `code` (vLLM sends an integer, or the older flat
//! `{"object": "error"}` shape the SDKs do not recognise).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::StatusCode;

use crate::error::ApiError;
use crate::observe::usage::{usage_report, Usage};
use crate::relay::stream::StreamAdapter;
use crate::sse::{event_end, first_data, joined_data, may_be_utf8, with_held, MAX_EVENT_BYTES};

/// Incremental SSE scanner state for one stream.
#[derive(Debug, Default)]
pub struct SseScanner {
    partial: BytesMut,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An engine error event was relayed (rewritten).
    pub errored: bool,
    /// The stream's last, unfinished event was not UTF-8 (dropped).
    pub invalid_utf8: bool,
    /// Drop the engine's usage chunk (Bridge asked for it; the client did not).
    strip_usage: bool,
    /// Content events seen since [`StreamAdapter::take_events`] last asked.
    events: u64,
    /// The last usage the engine reported, not yet taken.
    usage: Option<(u64, u64)>,
}

/// Why a stream cannot be relayed further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// An event (or line) longer than [`MAX_EVENT_BYTES`].
    EventTooLarge,
    /// Bytes that are not UTF-8 (the SDKs would fail on them with a raw decode error).
    InvalidUtf8,
}

pub use ScanError::EventTooLarge;

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    Done,
    Error,
}

impl SseScanner {
    /// A scanner that removes the engine's usage chunk when `strip_usage` (Bridge asked the
    /// engine for usage the client did not ask for).
    pub fn new(strip_usage: bool) -> Self {
        SseScanner {
            strip_usage,
            ..Self::default()
        }
    }

    /// Notes a normal event and says what reaches the client: when Bridge asked for usage the
    /// client did not, the usage chunk is dropped and `"usage": null` (which engines following
    /// OpenAI add to every chunk then) is cut out.
    fn normal(&mut self, event: &[u8]) -> Relay {
        match usage_report(event) {
            Usage::None => {
                self.events += 1;
                Relay::Keep
            }
            Usage::Null(range) => {
                self.events += 1;
                if self.strip_usage {
                    Relay::Cut(range)
                } else {
                    Relay::Keep
                }
            }
            Usage::Report(usage, has_choices) => {
                self.usage = Some(usage);
                if has_choices {
                    self.events += 1;
                }
                if has_choices || !self.strip_usage {
                    Relay::Keep
                } else {
                    Relay::Drop
                }
            }
        }
    }

    /// Feeds one chunk from the engine and appends what should be sent to the client to `out`.
    pub fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ScanError> {
        let Some(buf) = with_held(&mut self.partial, chunk) else {
            return self.check_partial();
        };
        if !may_be_utf8(&buf) {
            return Err(ScanError::InvalidUtf8);
        }
        let (mut run_start, mut pos) = (0, 0);
        while let Some(end) = event_end(&buf, pos) {
            match classify(&buf[pos..end]) {
                Kind::Normal => match self.normal(&buf[pos..end]) {
                    Relay::Keep => {}
                    // The run so far, up to the cut; the run goes on after it. No copy: two
                    // slices of the engine's chunk.
                    Relay::Cut(cut) => {
                        if run_start < pos + cut.start {
                            out.push_back(buf.slice(run_start..pos + cut.start));
                        }
                        run_start = pos + cut.end;
                    }
                    Relay::Drop => {
                        if run_start < pos {
                            out.push_back(buf.slice(run_start..pos));
                        }
                        run_start = end;
                    }
                },
                Kind::Done => self.done = true,
                Kind::Error => {
                    if run_start < pos {
                        out.push_back(buf.slice(run_start..pos));
                    }
                    out.push_back(rewrite_error(&buf[pos..end]));
                    self.errored = true;
                    run_start = end;
                }
            }
            pos = end;
        }
        if run_start < pos {
            out.push_back(buf.slice(run_start..pos));
        }
        self.partial.extend_from_slice(&buf[pos..]);
        self.check_partial()
    }

    fn check_partial(&self) -> Result<(), ScanError> {
        if self.partial.len() > MAX_EVENT_BYTES {
            Err(EventTooLarge)
        } else {
            Ok(())
        }
    }

    /// At the end of the engine's stream: relays a last event that lacked its blank line, but
    /// only when it is whole (`[DONE]`, an error, or complete JSON). A truncated event is
    /// dropped: the SDKs json-decode every event and would fail with a raw decode error instead
    /// of the in-band error the relay sends next.
    pub fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        if self.partial.iter().all(u8::is_ascii_whitespace) {
            self.partial.clear();
            return;
        }
        // Held back while incomplete, it was never checked: at the end a cut character is as
        // invalid as a bad byte (found by fuzzing).
        if simdutf8::basic::from_utf8(&self.partial).is_err() {
            self.partial.clear();
            self.invalid_utf8 = true;
            return;
        }
        let mut event = self.partial.split();
        while !event.ends_with(b"\n\n") {
            event.extend_from_slice(b"\n");
        }
        match classify(&event) {
            Kind::Done => {
                self.done = true;
                out.push_back(event.freeze());
            }
            Kind::Error => {
                self.errored = true;
                out.push_back(rewrite_error(&event));
            }
            Kind::Normal => {
                let data = joined_data(&event);
                if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok() {
                    let event = event.freeze();
                    match self.normal(&event) {
                        Relay::Keep => out.push_back(event),
                        Relay::Cut(cut) => {
                            out.push_back(event.slice(..cut.start));
                            out.push_back(event.slice(cut.end..));
                        }
                        Relay::Drop => {}
                    }
                }
            }
        }
    }
}

/// What happens to a normal event on its way to the client.
enum Relay {
    Keep,
    Drop,
    /// Relayed without these bytes (relative to the event).
    Cut(std::ops::Range<usize>),
}

fn classify(event: &[u8]) -> Kind {
    let Some(data) = first_data(event) else {
        return Kind::Normal;
    };
    if data.trim_ascii_end() == b"[DONE]" {
        return Kind::Done;
    }
    if is_error_payload(data) {
        Kind::Error
    } else {
        Kind::Normal
    }
}

/// True for `{"error": ...}` and `{"object": "error", ...}`, judged from the first key alone so
/// that normal chunks cost a few byte comparisons.
fn is_error_payload(data: &[u8]) -> bool {
    let data = data.trim_ascii_start();
    let Some(rest) = data.strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    if rest.starts_with(b"\"error\"") {
        return true;
    }
    let Some(after_key) = rest.strip_prefix(b"\"object\"") else {
        return false;
    };
    let after_key = after_key.trim_ascii_start();
    after_key
        .strip_prefix(b":")
        .is_some_and(|v| v.trim_ascii_start().starts_with(b"\"error\""))
}

/// The engine's error event in the OpenAI envelope, as one event.
fn rewrite_error(event: &[u8]) -> Bytes {
    let data = joined_data(event);
    let status = serde_json::from_slice::<serde_json::Value>(&data)
        .ok()
        .and_then(|v| {
            let code = v
                .get("error")
                .and_then(|e| e.get("code"))
                .or_else(|| v.get("code"));
            code.and_then(serde_json::Value::as_u64)
        })
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::from_engine(status, &data).sse_data()
}

/// The OpenAI relay: events pass through as they are (engine errors rewritten), and a stream
/// that did not end with `[DONE]` gets an in-band error.
impl StreamAdapter for SseScanner {
    fn is_complete(&self) -> bool {
        self.done
    }

    fn take_events(&mut self) -> u64 {
        std::mem::take(&mut self.events)
    }

    fn take_usage(&mut self) -> Option<(u64, u64)> {
        self.usage.take()
    }

    fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ApiError> {
        SseScanner::feed(self, chunk, out).map_err(|e| match e {
            ScanError::EventTooLarge => ApiError::bad_gateway(format!(
                "the engine sent a stream event larger than {MAX_EVENT_BYTES} bytes"
            ))
            .with_code("upstream_event_too_large"),
            ScanError::InvalidUtf8 => ApiError::upstream_invalid_utf8(),
        })
    }

    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        SseScanner::finish(self, out);
        if self.done {
            return;
        }
        if self.invalid_utf8 {
            out.push_back(ApiError::upstream_invalid_utf8().sse_event());
        } else if self.errored {
            // The engine reported its own error; only the end marker is missing.
            out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        } else {
            let error = ApiError::bad_gateway(
                "the engine ended the stream without data: [DONE]; the answer may be incomplete",
            )
            .with_code("upstream_stream_incomplete");
            out.push_back(error.sse_event());
        }
    }

    fn fail(&mut self, error: ApiError, out: &mut VecDeque<Bytes>) {
        // After `[DONE]` the client's stream is complete; what the engine does next is moot.
        if !self.done {
            out.push_back(error.sse_event());
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

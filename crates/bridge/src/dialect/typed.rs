//! Typed event streams, as the Responses API and Anthropic's Messages API write them:
//! `event: <type>` and `data: {...}` pairs, ended by a terminal event of the API's own (no
//! `[DONE]`).
//!
//! [`TypedEvents`] forwards each run of complete events as zero-copy slices of the chunk they
//! came in, as the OpenAI scanner does, and shows each event's type to the API's [`Grammar`],
//! which says whether it ends the stream and what it reports of usage. A stream that breaks,
//! goes silent or ends without a terminal event gets the grammar's own in-band error instead of
//! a clean-looking end.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::error::ApiError;
use crate::observe::usage::Key;
use crate::relay::stream::StreamAdapter;
use crate::sse::{event_end, may_be_utf8, with_held, MAX_EVENT_BYTES};

/// What one typed event means for the stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// It ends the stream (a final event, or the engine's own error event).
    pub terminal: bool,
    /// It carries output (for time to first token and the gaps between tokens).
    pub content: bool,
    /// Token counts it reports; `None` for either keeps what is known.
    pub prompt: Option<u64>,
    /// See `prompt`.
    pub completion: Option<u64>,
}

/// One API's event types.
pub trait Grammar: Send + Unpin {
    /// Looks at one whole event of type `kind` (`event` is its bytes, blank line included).
    fn event(&mut self, kind: &[u8], event: &[u8]) -> Seen;

    /// The in-band events that end a stream that failed with `error`.
    fn error_events(&self, error: &ApiError) -> Bytes;
}

/// A typed event stream relayed for a [`Grammar`].
#[derive(Debug, Default)]
pub struct TypedEvents<G> {
    grammar: G,
    partial: BytesMut,
    done: bool,
    events: u64,
    prompt: Option<u64>,
    completion: Option<u64>,
    usage_changed: bool,
}

impl<G: Grammar> TypedEvents<G> {
    /// A relay for `grammar`'s stream.
    pub fn new(grammar: G) -> Self {
        TypedEvents {
            grammar,
            partial: BytesMut::new(),
            done: false,
            events: 0,
            prompt: None,
            completion: None,
            usage_changed: false,
        }
    }

    fn note(&mut self, event: &[u8]) {
        let seen = self.grammar.event(event_type(event), event);
        self.done |= seen.terminal;
        self.events += u64::from(seen.content);
        if seen.prompt.is_some() || seen.completion.is_some() {
            self.prompt = seen.prompt.or(self.prompt);
            self.completion = seen.completion.or(self.completion);
            self.usage_changed = true;
        }
    }

    fn failure(&self, error: &ApiError) -> Bytes {
        self.grammar.error_events(error)
    }

    /// An event that never ends must not grow memory without bound.
    fn check_size(&self) -> Result<(), ApiError> {
        if self.partial.len() > MAX_EVENT_BYTES {
            return Err(ApiError::bad_gateway(format!(
                "the engine sent a stream event larger than {MAX_EVENT_BYTES} bytes"
            ))
            .with_code("upstream_event_too_large"));
        }
        Ok(())
    }
}

/// The value of an event's `event:` field (empty when it has none).
pub fn event_type(event: &[u8]) -> &[u8] {
    event
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let rest = line.strip_prefix(b"event:")?;
            Some(rest.strip_prefix(b" ").unwrap_or(rest))
        })
        .unwrap_or_default()
}

impl<G: Grammar> StreamAdapter for TypedEvents<G> {
    fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ApiError> {
        let Some(buf) = with_held(&mut self.partial, chunk) else {
            return self.check_size();
        };
        if !may_be_utf8(&buf) {
            return Err(ApiError::upstream_invalid_utf8());
        }
        let mut pos = 0;
        while let Some(end) = event_end(&buf, pos) {
            self.note(&buf[pos..end]);
            pos = end;
        }
        if pos > 0 {
            out.push_back(buf.slice(..pos));
        }
        self.partial.extend_from_slice(&buf[pos..]);
        self.check_size()
    }

    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        // A last event without its blank line is relayed only when it is whole and ends the
        // stream; a truncated one would fail the SDK's parse instead of raising its error.
        let rest = self.partial.split();
        if !rest.iter().all(u8::is_ascii_whitespace) && !self.done {
            let mut event = rest;
            event.extend_from_slice(b"\n\n");
            let data = crate::sse::joined_data(&event);
            if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok()
                && simdutf8::basic::from_utf8(&event).is_ok()
            {
                self.note(&event);
                if self.done {
                    out.push_back(event.freeze());
                    return;
                }
            }
        }
        if !self.done {
            let error = ApiError::bad_gateway(
                "the engine ended the stream without its final event; the answer may be incomplete",
            )
            .with_code("upstream_stream_incomplete");
            out.push_back(self.failure(&error));
        }
    }

    fn fail(&mut self, error: ApiError, out: &mut VecDeque<Bytes>) {
        if !self.done {
            out.push_back(self.failure(&error));
        }
    }

    fn take_events(&mut self) -> u64 {
        std::mem::take(&mut self.events)
    }

    fn take_usage(&mut self) -> Option<(u64, u64)> {
        std::mem::take(&mut self.usage_changed)
            .then(|| (self.prompt.unwrap_or(0), self.completion.unwrap_or(0)))
    }

    fn is_complete(&self) -> bool {
        self.done
    }
}

/// The number after `"key":` in `event`, found without parsing it.
pub fn number_after(event: &[u8], key: &Key) -> Option<u64> {
    let at = key.find(event)?;
    let rest = event[at + key.needle().len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::dialect::anthropic::MessageEvents;

    const STREAM: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"h\xc3\xa9\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn relay(chunks: &[&[u8]]) -> (Vec<u8>, TypedEvents<MessageEvents>) {
        let mut adapter = TypedEvents::new(MessageEvents);
        let mut out = VecDeque::new();
        for chunk in chunks {
            adapter
                .feed(Bytes::copy_from_slice(chunk), &mut out)
                .unwrap_or_else(|e| panic!("{}", e.message));
        }
        adapter.finish(&mut out);
        (out.iter().flat_map(|b| b.to_vec()).collect(), adapter)
    }

    #[test]
    fn cut_anywhere_the_stream_passes_whole_with_its_usage() {
        for cut in 0..STREAM.len() {
            let (out, mut adapter) = relay(&[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(out, STREAM, "cut at {cut}");
            assert!(adapter.is_complete());
            assert_eq!(adapter.take_usage(), Some((7, 5)));
            assert_eq!(adapter.take_events(), 1);
        }
    }

    #[test]
    fn a_stream_without_its_final_event_ends_with_the_apis_error() {
        let cut = STREAM.len() - 50;
        let (out, adapter) = relay(&[&STREAM[..cut]]);
        let text = String::from_utf8(out).unwrap();
        assert!(!adapter.is_complete());
        assert!(
            text.ends_with("\n\n") && text.contains("event: error\ndata: {\"type\":\"error\""),
            "{text}"
        );
        assert!(
            text.contains("upstream_stream_incomplete") || text.contains("api_error"),
            "{text}"
        );
    }

    #[test]
    fn an_event_trickling_in_byte_by_byte_is_relayed_once_whole() {
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (out, adapter) = relay(&bytes);
        assert_eq!(out, STREAM);
        assert!(adapter.is_complete());
        let mut endless = TypedEvents::new(MessageEvents);
        let mut out = VecDeque::new();
        let line = Bytes::from(vec![b'a'; 1 << 20]);
        let failed = (0..9).any(|_| endless.feed(line.clone(), &mut out).is_err());
        assert!(failed, "an event that never ends is bounded");
    }
}

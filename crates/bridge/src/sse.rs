//! The server-sent events grammar, as engines write it and SSE clients read it.
//!
//! Engine chunks do not line up with event boundaries, so anything that inspects a stream must
//! find event ends first. These are the few primitives every stream adapter shares; none of them
//! copies more than the data lines it is asked for.

use bytes::{Bytes, BytesMut};

use crate::error::ApiError;

/// Largest single event accepted from an engine (a chunk with top logprobs can be large, but an
/// event that never ends must not grow memory without bound).
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// What to scan once `chunk` arrives: `chunk` itself when nothing is held, else the held
/// unfinished event with `chunk` appended, once that completes it. `None` while it still does
/// not: only the new bytes (and the 3 before them) are searched for the end, so an event that
/// trickles in is never searched, or checked, again from its start.
pub fn with_held(held: &mut BytesMut, chunk: Bytes) -> Option<Bytes> {
    if held.is_empty() {
        return Some(chunk);
    }
    let from = held.len().saturating_sub(3);
    held.extend_from_slice(&chunk);
    event_end(held, from)?;
    Some(held.split().freeze())
}

/// Whether `buf` can still be UTF-8: it is, or its only flaw is a character cut at its end
/// (the next chunk may complete it). A SIMD pass at many GB/s in the usual case.
pub fn may_be_utf8(buf: &[u8]) -> bool {
    simdutf8::basic::from_utf8(buf).is_ok()
        || matches!(std::str::from_utf8(buf), Err(e) if e.error_len().is_none())
}

/// All `data:` lines of an event joined with `\n`, as SSE clients (and the SDKs) read them.
pub fn joined_data(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    data
}

/// Index just past the first blank line (event terminator) at or after `from`.
pub fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', buf.get(i..)?) {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// The payload of an event's first `data:` line, without the optional leading space. Lines
/// are found with `memchr`: this runs for every event relayed, and a byte-at-a-time split of a
/// few hundred bytes cost more than the rest of the event's relay stage.
pub fn first_data(event: &[u8]) -> Option<&[u8]> {
    let mut rest = event;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], Some(&rest[nl + 1..])),
            None => (rest, None),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(data) = line.strip_prefix(b"data:") {
            return Some(data.strip_prefix(b" ").unwrap_or(data));
        }
        rest = next?;
    }
}

/// Errors as OpenAI stream events.
impl ApiError {
    /// The envelope as one in-band SSE event (`data: {...}` and a blank line).
    pub fn sse_data(&self) -> Bytes {
        self.sse_with_tail(b"\n\n")
    }

    /// The envelope as an in-band SSE event followed by the end-of-stream marker, for failures
    /// after streaming began: the SDKs raise `APIError` for it instead of ending silently.
    pub fn sse_event(&self) -> Bytes {
        self.sse_with_tail(b"\n\ndata: [DONE]\n\n")
    }

    fn sse_with_tail(&self, tail: &[u8]) -> Bytes {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() + 6 + tail.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(tail);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::first_data;

    #[test]
    fn first_data_is_the_first_data_lines_payload() {
        let cases: [(&[u8], Option<&[u8]>); 9] = [
            (b"data: {\"a\":1}\n\n", Some(b"{\"a\":1}")),
            (b"data:{\"a\":1}\n\n", Some(b"{\"a\":1}")),
            (b"data:  two spaces\n\n", Some(b" two spaces")),
            (b"data: crlf\r\n\r\n", Some(b"crlf")),
            (
                b": comment\nevent: x\r\ndata: third\ndata: fourth\n\n",
                Some(b"third"),
            ),
            (b"data: unterminated", Some(b"unterminated")),
            (b"event: only\n\n", None),
            (b" data: indented is not a data line\n\n", None),
            (b"", None),
        ];
        for (event, want) in cases {
            assert_eq!(
                first_data(event),
                want,
                "{:?}",
                String::from_utf8_lossy(event)
            );
        }
    }
}

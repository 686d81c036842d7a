//! A request to an engine as Bridge sends it: method, URI, body, and its header lines already
//! in HTTP/1.1's bytes.
//!
//! Why lines and not a header map: Bridge only forwards the client's headers (less the ones
//! [`super::client::upstream_headers`] strips) and adds a few; nothing reads them again. Built
//! as a second `HeaderMap`, each kept header was hashed into it and the map then walked to be
//! written, ~2,000 instructions per request (callgrind); as lines, each is copied once.
//!
//! The headers Bridge never reads ([`is_forward_only`]) skip the client's map too: the server
//! writes them as lines while it parses the head, and hands them on as [`ForwardOnly`].

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri};

use crate::body::ReqBody;

/// Header lines (`name: value\r\n` each) of a request to an engine. Never `host` or
/// `content-length`: the request head writes those from the URI and the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderLines(Vec<u8>);

impl HeaderLines {
    /// Empty lines with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    /// Adds `name: value`. The `http` crate's names and values hold no CR or LF, so no line can
    /// end early and smuggle another header in.
    pub fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        debug_assert!(name != header::HOST && name != header::CONTENT_LENGTH);
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }

    /// Adds a line from a parsed head's bytes, its name lowercased as [`HeaderName`] would.
    /// `name` must be a token and `value` hold no control bytes but tab: what `httparse`
    /// accepts, and what the `http` crate's types would.
    pub fn push_raw(&mut self, name: &[u8], value: &[u8]) {
        debug_assert!(
            HeaderName::from_bytes(name).is_ok() && HeaderValue::from_bytes(value).is_ok()
        );
        self.0.reserve(name.len() + value.len() + 4);
        let at = self.0.len();
        self.0.extend_from_slice(name);
        // In place, where it is one pass without a capacity check per byte.
        self.0[at..].make_ascii_lowercase();
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Adds a whole line as a parsed head holds it (`name: value\r\n`, one space after the
    /// colon), its first `name_len` bytes lowercased: one copy where [`Self::push_raw`] makes
    /// four (~90 instructions a line). The same conditions as `push_raw`.
    pub fn push_line(&mut self, line: &[u8], name_len: usize) {
        debug_assert!(line.ends_with(b"\r\n") && line[name_len..].starts_with(b": "));
        let at = self.0.len();
        self.0.extend_from_slice(line);
        self.0[at..at + name_len].make_ascii_lowercase();
    }

    /// Room for `bytes` more.
    pub fn reserve(&mut self, bytes: usize) {
        self.0.reserve(bytes);
    }

    /// Whether no line was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lines as written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Whether a client's request header is one Bridge forwards to the engine and never reads:
/// what the official SDKs send on every call besides the request's own (`accept`,
/// `user-agent`, the Stainless-made SDKs' nine or so `x-stainless-*`, and fetch's
/// `accept-language` and `sec-fetch-mode`). None is stripped by
/// [`super::client::upstream_headers`].
///
/// Why: in the client's `HeaderMap` each of these cost ~1,370 instructions (a custom name is
/// lowercased into an allocation of its own, hashed, stored, read back and freed), a third of
/// an SDK request's instructions (callgrind, `HEADERS=sdk benchmarks/callgrind.py`).
pub fn is_forward_only(name: &[u8]) -> bool {
    const STAINLESS: &[u8] = b"x-stainless-";
    let exact: &[u8] = match name.len() {
        6 => b"accept",
        10 => b"user-agent",
        14 => b"sec-fetch-mode",
        15 => b"accept-language",
        _ => b"",
    };
    // An `x-stainless-*` name may have any of those lengths too (`x-stainless-os`: 14).
    (!exact.is_empty() && starts_folded(name, exact))
        || (name.len() > STAINLESS.len() && starts_folded(name, STAINLESS))
}

/// Whether `name` starts with `word` (lowercase letters and `-`) in any case, eight bytes at
/// a time (`eq_ignore_ascii_case` went a byte at a time: ~90 instructions for each
/// `x-stainless-` header). Exact for the token bytes a header name holds: each byte of `word`
/// has the 0x20 bit, and the only other byte that ORs to it is its capital (or, for `-`, CR).
fn starts_folded(name: &[u8], word: &[u8]) -> bool {
    fn folded(bytes: &[u8]) -> u64 {
        let mut eight = [0; 8];
        eight[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(eight) | 0x2020_2020_2020_2020
    }
    name.len() >= word.len()
        && (name[..word.len()].chunks(8))
            .zip(word.chunks(8))
            .all(|(a, w)| folded(a) == folded(w))
}

/// A client's forward-only headers ([`is_forward_only`]) as the engine's lines, in the
/// request's extensions when it had any: the server wrote them while parsing its head.
#[derive(Clone, Debug)]
pub struct ForwardOnly(pub HeaderLines);

/// A request to an engine.
#[derive(Debug)]
pub struct EngineRequest {
    /// The method.
    pub method: Method,
    /// The absolute URI: the replica's authority and the target.
    pub uri: Uri,
    /// The headers but `host` and `content-length`.
    pub headers: HeaderLines,
    /// The body, already in memory.
    pub body: ReqBody,
}

impl EngineRequest {
    /// A request with the given parts.
    pub fn new(method: Method, uri: Uri, headers: HeaderLines, body: ReqBody) -> Self {
        Self {
            method,
            uri,
            headers,
            body,
        }
    }

    /// A `method` request to `uri` with no headers and no body.
    pub fn bare(method: Method, uri: Uri) -> Self {
        Self::new(method, uri, HeaderLines::default(), ReqBody::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_as_given() {
        let mut lines = HeaderLines::default();
        lines.push(
            &HeaderName::from_static("x-a"),
            &HeaderValue::from_static("1"),
        );
        lines.push(
            &header::AUTHORIZATION,
            &HeaderValue::from_static("Bearer k"),
        );
        assert_eq!(lines.as_bytes(), b"x-a: 1\r\nauthorization: Bearer k\r\n");
        lines.push_raw(b"X-Stainless-OS", b"Linux");
        assert!(lines.as_bytes().ends_with(b"x-stainless-os: Linux\r\n"));
    }

    #[test]
    fn forward_only_names_are_the_sdks_and_never_stripped() {
        for name in [
            "accept",
            "User-Agent",
            "X-Stainless-Retry-Count",
            "x-stainless-lang",
            "X-Stainless-OS",
            "x-stainless-arc",
            "accept-language",
            "sec-fetch-mode",
        ] {
            assert!(is_forward_only(name.as_bytes()), "{name}");
            let lower = HeaderName::from_bytes(name.as_bytes()).unwrap();
            let mut client = http::HeaderMap::new();
            client.insert(lower.clone(), HeaderValue::from_static("v"));
            let id = HeaderValue::from_static("id");
            let lines =
                super::super::client::upstream_headers(&client, HeaderLines::default(), &id, None);
            let line = format!("{lower}: v\r\n");
            assert!(
                lines.as_bytes().starts_with(line.as_bytes()),
                "{name} is stripped"
            );
        }
        for name in [
            "accept-encoding",
            "authorization",
            "x-stainless-",
            "x-stainless",
            "content-type",
            "connection",
            "x-api-key",
            "accepts",
        ] {
            assert!(!is_forward_only(name.as_bytes()), "{name}");
        }
    }
}

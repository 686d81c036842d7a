//! A request to an engine as Bridge sends it: method, URI, body, and its header lines already
//! in HTTP/1.1's bytes.
//!
//! Why lines and not a header map: Bridge only forwards the client's headers (less the ones
//! [`super::client::upstream_headers`] strips) and adds a few; nothing reads them again. Built
//! as a second `HeaderMap`, each kept header was hashed into it and the map then walked to be
//! written, ~2,000 instructions per request (callgrind); as lines, each is copied once.

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

    /// The lines as written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

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
    }
}

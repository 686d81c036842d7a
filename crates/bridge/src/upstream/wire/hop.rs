//! The hop-by-hop headers of an engine's response, read from its raw lines: how its body is
//! framed, whether the connection stays open, and which other names `connection` lists.
//!
//! Read before the header map is built, so that none of them goes into it: they describe the
//! engine's connection, not the answer (RFC 9110 §7.6.1), and a map hashed each of them only
//! for the relay to take it out again.

use http::{Method, StatusCode};

use super::{Framing, WireError};
use crate::headers::parse_decimal;

/// The hop-by-hop headers of one response.
#[derive(Default)]
pub(super) struct Hop<'a> {
    /// A `transfer-encoding` was sent, and whether its last coding is chunked.
    transfer: Option<bool>,
    /// The `content-length`, or why it cannot be used.
    length: Option<Result<u64, &'static str>>,
    /// `connection: close`.
    pub(super) close: bool,
    /// Other names `connection` lists: hop-by-hop too (rare; only then allocated).
    pub(super) listed: Vec<&'a str>,
}

impl<'a> Hop<'a> {
    /// Reads one header line.
    pub(super) fn note(&mut self, name: &str, value: &'a [u8]) {
        if name.eq_ignore_ascii_case("content-length") {
            self.note_length(value);
            return;
        }
        let te = name.eq_ignore_ascii_case("transfer-encoding");
        if te {
            self.transfer.get_or_insert(false);
        } else if !name.eq_ignore_ascii_case("connection") {
            return;
        }
        // Tokens are read as `HeaderValue::to_str` would have them: a value with bytes other
        // than visible ASCII says nothing (and one without them is UTF-8).
        if !value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
            return;
        }
        let Ok(text) = std::str::from_utf8(value) else {
            return;
        };
        let mut tokens = text.split(',').map(str::trim).filter(|t| !t.is_empty());
        if te {
            if let Some(last) = tokens.next_back() {
                self.transfer = Some(last.eq_ignore_ascii_case("chunked"));
            }
            return;
        }
        for token in tokens {
            if token.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if !token.eq_ignore_ascii_case("keep-alive") {
                self.listed.push(token);
            }
        }
    }

    /// Every `content-length` value (and comma-separated part) must be the same number.
    fn note_length(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            self.length = Some(match (parse_decimal(part.trim_ascii()), self.length) {
                (_, Some(Err(why))) => Err(why),
                (None, _) => Err("invalid content-length"),
                (Some(n), Some(Ok(l))) if l != n => Err("conflicting content-length values"),
                (Some(n), _) => Ok(n),
            });
        }
    }

    /// RFC 9112 §6.3: a body's length from the request method, the status and the headers.
    pub(super) fn framing(
        &self,
        method: &Method,
        status: StatusCode,
    ) -> Result<Framing, WireError> {
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Empty);
        }
        // Chunked must be the last coding; anything else is read until the close.
        match (self.transfer, self.length) {
            (Some(true), _) => Ok(Framing::Chunked),
            (Some(false), _) | (None, None) => Ok(Framing::UntilClose),
            (None, Some(Ok(n))) => Ok(Framing::Length(n)),
            (None, Some(Err(why))) => Err(WireError::Invalid(why)),
        }
    }
}

//! Header names Bridge reads and sets on every request, parsed once, and the reading of a
//! `content-length` that both of its HTTP/1.1 sides (client and engine) make.
//!
//! A `&str` header name is parsed and validated each time it is used as a key (a few hundred
//! instructions); these constants are built at compile time, so the hot path only compares.

use http::HeaderName;

/// The request id: the client's when sane, else a new one; sent to the engine and back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Bridge's own time for the request, in microseconds: from arrival to the response head,
/// less the time spent waiting for engines.
pub const OVERHEAD: HeaderName = HeaderName::from_static("x-bridge-overhead-us");
/// W3C trace context: the caller's span, replaced by Bridge's engine span when traced.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Tells the SDKs whether retrying may help.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
/// Tells nginx in front of Bridge not to buffer a stream.
pub const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Response headers that stop at Bridge, dropped as an engine's response head is read.
/// The hop-by-hop ones describe the engine's connection (RFC 9110 §7.6.1); the rest would
/// mislead Bridge's clients: the engine's date, server, cookies, alternative services, auth
/// challenges and security policy are about the engine, and Bridge sets its own request id.
/// Any other name the engine's `connection` header lists is dropped too.
pub const ENGINE_ONLY: [&str; 16] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "date",
    "server",
    "set-cookie",
    "alt-svc",
    "www-authenticate",
    "proxy-authenticate",
    "strict-transport-security",
    "x-request-id",
];

/// A `content-length` value: ASCII digits only, at most 19.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

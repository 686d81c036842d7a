//! Header names Bridge reads and sets on every request, parsed once.
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

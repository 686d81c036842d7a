//! Observe: what Bridge records about the requests it serves (into [`crate::config::stats`]).
//!
//! - [`usage`]: the engines' token usage, read from answers and stream events.
//! - [`record`]: one request's record, which counts it and writes its log line when dropped.
//! - [`request_log`]: that line, formatted by hand; [`log`]: the buffer and thread every log
//!   line goes to stderr through.
//! - [`metrics`]: `GET /metrics`, encoded from the atomics at scrape time.
//! - [`trace`]: which requests are traced and where spans go; [`spans`]: one request's spans.

pub mod log;
pub mod metrics;
pub mod record;
pub mod request_log;
pub mod spans;
pub mod trace;
pub mod usage;

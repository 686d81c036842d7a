//! Observe: what Bridge records about the requests it serves (into [`crate::config::stats`]).
//!
//! - [`usage`]: the engines' token usage, read from answers and stream events.
//! - [`record`]: one request's record, which counts it and writes its log line when dropped.
//! - [`metrics`]: `GET /metrics`, encoded from the atomics at scrape time.

pub mod metrics;
pub mod record;
pub mod usage;

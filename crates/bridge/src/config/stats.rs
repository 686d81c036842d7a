//! Counters and histograms in atomics: what a request adds to when it ends.
//!
//! Values live next to what they describe ([`Stats`] on each deployment, replica state on each
//! replica), so recording costs a few relaxed atomic adds: no lock, no label hashing, no
//! allocation per request or per event. [`crate::observe::metrics`] reads them at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::UpstreamFailure;

pub use super::endpoint::ROUTES;
/// `status` label values: the class of the status sent to the client.
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Request durations and time to first token: milliseconds to the 10 minutes a generation may
/// take.
const LATENCY_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];
/// Gaps between streamed events: a fast engine's ~5 ms to a stalled one's seconds.
const EVENT_GAP_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub(crate) const FAILURE_REASONS: [&str; 4] = ["connect", "reset", "timeout", "5xx"];

/// A histogram of durations in atomics, with fixed bounds.
#[derive(Debug)]
pub struct Histogram {
    pub(crate) bounds: &'static [f64],
    /// One counter per bound, plus +Inf.
    pub(crate) buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    pub(crate) sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// What one deployment (or, for requests that never reached one, the registry) has served.
#[derive(Debug)]
pub struct Stats {
    /// Key labels (configured keys and `-`).
    pub(crate) keys: usize,
    /// Requests by route, key and status class, flattened.
    pub(crate) requests: Box<[AtomicU64]>,
    /// Requests being answered now.
    pub in_flight: AtomicI64,
    /// Whole-request durations by route (streams: until their last byte).
    pub(crate) duration: [Histogram; ROUTES.len()],
    /// Request start to the first streamed event.
    pub time_to_first_token: Histogram,
    /// Gaps between streamed events after the first.
    pub inter_token: Histogram,
    pub(crate) prompt_tokens: Box<[AtomicU64]>,
    pub(crate) completion_tokens: Box<[AtomicU64]>,
    pub(crate) upstream_errors: [AtomicU64; 4],
    /// Requests tried again on another replica.
    pub retries: AtomicU64,
    /// Requests whose client went away before the answer was complete.
    pub cancellations: AtomicU64,
}

impl Stats {
    /// Stats for `keys` key labels.
    pub fn new(keys: usize) -> Self {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Stats {
            keys,
            requests: counters(ROUTES.len() * keys * STATUS_CLASSES.len()),
            in_flight: AtomicI64::new(0),
            duration: [0; ROUTES.len()].map(|_| Histogram::new(&LATENCY_BUCKETS)),
            time_to_first_token: Histogram::new(&LATENCY_BUCKETS),
            inter_token: Histogram::new(&EVENT_GAP_BUCKETS),
            prompt_tokens: counters(keys),
            completion_tokens: counters(keys),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            cancellations: AtomicU64::new(0),
        }
    }

    fn request_slot(&self, route: usize, key: usize, status: u16) -> usize {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        (route * self.keys + key.min(self.keys - 1)) * STATUS_CLASSES.len() + class
    }

    /// Counts a finished request.
    pub fn finished(&self, route: usize, key: usize, status: u16, duration: Duration) {
        self.requests[self.request_slot(route, key, status)].fetch_add(1, Ordering::Relaxed);
        self.duration[route].observe(duration);
    }

    /// Adds an engine's reported usage to a key's totals.
    pub fn tokens(&self, key: usize, prompt: u64, completion: u64) {
        let key = key.min(self.keys - 1);
        self.prompt_tokens[key].fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens[key].fetch_add(completion, Ordering::Relaxed);
    }

    /// Counts a failed engine attempt by reason.
    pub fn upstream_error(&self, why: UpstreamFailure) {
        self.upstream_errors[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

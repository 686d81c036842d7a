//! Counters and histograms behind `GET /metrics` (Prometheus text format).
//!
//! Values live in atomics next to what they describe ([`Stats`] on each deployment, replica
//! state on each replica), so recording costs a few relaxed atomic adds: no lock, no label
//! hashing, no allocation per request or per event. A scrape walks the routing table and
//! encodes the values through `prometheus-client`'s encoder; scrapes are rare, requests are not.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::registry::Registry;

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `route` label values, indexed by [`crate::registry::Endpoint`] (the forwarded routes).
pub const ROUTES: [&str; 3] = ["chat/completions", "completions", "embeddings"];
/// `status` label values: the class of the status sent to the client.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
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

/// Why an engine request failed, for `bridge_upstream_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be opened.
    Connect,
    /// The connection failed or broke off (before or during the answer).
    Reset,
    /// No answer, or silence, within the deployment's limits.
    Timeout,
    /// The engine answered 5xx.
    ServerError,
}

const FAILURE_REASONS: [&str; 4] = ["connect", "reset", "timeout", "5xx"];

/// A histogram of durations in atomics, with fixed bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, plus +Inf.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
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

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What one deployment (or, for requests that never reached one, the registry) has served.
#[derive(Debug)]
pub struct Stats {
    /// Key labels (configured keys and `-`).
    keys: usize,
    /// Requests by route, key and status class, flattened.
    requests: Box<[AtomicU64]>,
    pub in_flight: AtomicI64,
    /// Whole-request durations by route (streams: until their last byte).
    duration: [Histogram; 3],
    /// Request start to the first streamed event.
    pub time_to_first_token: Histogram,
    /// Gaps between streamed events after the first.
    pub inter_token: Histogram,
    prompt_tokens: Box<[AtomicU64]>,
    completion_tokens: Box<[AtomicU64]>,
    upstream_errors: [AtomicU64; 4],
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
            duration: [0; 3].map(|_| Histogram::new(&LATENCY_BUCKETS)),
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

    pub fn upstream_error(&self, why: UpstreamFailure) {
        self.upstream_errors[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// `/metrics` as an HTTP response.
pub fn response(registry: &Arc<Registry>) -> http::Response<crate::body::ResBody> {
    let mut response = http::Response::new(crate::body::ResBody::full(render(registry)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The metrics text for the current routing table.
pub fn render(registry: &Arc<Registry>) -> String {
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register_collector(Box::new(Scrape(registry.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &metrics);
    out
}

/// Encodes everything at scrape time, straight from the atomics.
#[derive(Debug)]
struct Scrape(Arc<Registry>);

/// Every [`Stats`] with its model and deployment labels (empty for requests never routed).
fn all_stats(registry: &Registry) -> Vec<([(&'static str, &str); 2], &Stats)> {
    let mut all = vec![([("model", ""), ("deployment", "")], &registry.unrouted)];
    for model in registry.models.values() {
        for d in model.deployments.values() {
            all.push(([("model", &model.id), ("deployment", &d.id)], &d.stats));
        }
    }
    all
}

fn counter(encoder: MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder)
}

fn gauge(encoder: MetricEncoder, value: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let registry = &self.0;
        let all = all_stats(registry);
        let keys = &registry.key_labels;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        let mut family = encoder.encode_descriptor(
            "bridge_requests",
            "Requests answered, by route, model, deployment, key name and status class (streams count when they end)",
            None,
            MetricType::Counter,
        )?;
        for (labels, stats) in &all {
            for (route, route_name) in ROUTES.iter().enumerate() {
                for (key, key_name) in keys.iter().enumerate() {
                    for (class, class_name) in STATUS_CLASSES.iter().enumerate() {
                        let slot = (route * stats.keys + key) * STATUS_CLASSES.len() + class;
                        let value = load(&stats.requests[slot]);
                        if value == 0 {
                            continue;
                        }
                        let set = [
                            ("route", *route_name),
                            labels[0],
                            labels[1],
                            ("key", key_name.as_str()),
                            ("status", *class_name),
                        ];
                        counter(family.encode_family(&set)?, value)?;
                    }
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "bridge_requests_in_flight",
            "Requests being answered now (streams until they end)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, stats) in all.iter().skip(1) {
            gauge(
                family.encode_family(labels)?,
                stats.in_flight.load(Ordering::Relaxed),
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "bridge_request_duration_seconds",
            "Whole-request time as Bridge saw it, streams until their last byte",
            None,
            MetricType::Histogram,
        )?;
        for (labels, stats) in &all {
            for (route, route_name) in ROUTES.iter().enumerate() {
                if stats.duration[route].count() > 0 {
                    let set = [("route", *route_name), labels[0], labels[1]];
                    stats.duration[route].encode(family.encode_family(&set)?)?;
                }
            }
        }

        for (name, help, pick) in [
            (
                "bridge_time_to_first_token_seconds",
                "Streams: request start to the first event from the engine",
                (|s: &Stats| &s.time_to_first_token) as fn(&Stats) -> &Histogram,
            ),
            (
                "bridge_inter_token_latency_seconds",
                "Streams: gap between consecutive events from the engine",
                |s: &Stats| &s.inter_token,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (labels, stats) in all.iter().skip(1) {
                pick(stats).encode(family.encode_family(labels)?)?;
            }
        }

        for (name, help, pick) in [
            (
                "bridge_prompt_tokens",
                "Prompt tokens, from the engines' usage reports",
                (|s: &Stats| &s.prompt_tokens) as fn(&Stats) -> &Box<[AtomicU64]>,
            ),
            (
                "bridge_completion_tokens",
                "Completion tokens, from the engines' usage reports",
                |s: &Stats| &s.completion_tokens,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in all.iter().skip(1) {
                for (key, key_name) in keys.iter().enumerate() {
                    let set = [labels[0], labels[1], ("key", key_name.as_str())];
                    counter(family.encode_family(&set)?, load(&pick(stats)[key]))?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "bridge_upstream_errors",
            "Failed engine requests by reason: connect, reset (connection broke, before or during the answer), timeout, 5xx",
            None,
            MetricType::Counter,
        )?;
        for (labels, stats) in all.iter().skip(1) {
            for (why, reason) in FAILURE_REASONS.iter().enumerate() {
                let set = [labels[0], labels[1], ("reason", *reason)];
                counter(
                    family.encode_family(&set)?,
                    load(&stats.upstream_errors[why]),
                )?;
            }
        }

        for (name, help, pick) in [
            (
                "bridge_retries",
                "Requests tried again on another replica (they never reached an engine)",
                (|s: &Stats| &s.retries) as fn(&Stats) -> &AtomicU64,
            ),
            (
                "bridge_client_cancellations",
                "Requests whose client disconnected before the answer was complete; the engine request was dropped at once",
                |s: &Stats| &s.cancellations,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in all.iter().skip(1) {
                counter(family.encode_family(labels)?, load(pick(stats)))?;
            }
        }

        encode_replicas(registry, &mut encoder)
    }
}

/// Health, ejection and load of every replica.
fn encode_replicas(
    registry: &Registry,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    type Read = fn(&crate::balance::ReplicaState) -> i64;
    let metrics: [(&str, &str, Read); 3] = [
        (
            "bridge_replica_healthy",
            "1 while a replica passes its active health checks (or has none), else 0",
            |s| i64::from(s.is_healthy()),
        ),
        (
            "bridge_replica_ejected",
            "1 while a replica is ejected after consecutive failures, else 0",
            |s| i64::from(s.is_ejected()),
        ),
        (
            "bridge_replica_outstanding_requests",
            "Requests in flight on a replica (streams count until they end)",
            |s| i64::try_from(s.outstanding()).unwrap_or(i64::MAX),
        ),
    ];
    for (name, help, read) in metrics {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for model in registry.models.values() {
            for d in model.deployments.values() {
                for replica in &d.replicas {
                    let set = [
                        ("model", model.id.as_str()),
                        ("deployment", d.id.as_str()),
                        ("replica", replica.base.as_str()),
                    ];
                    gauge(family.encode_family(&set)?, read(&replica.state))?;
                }
            }
        }
    }
    Ok(())
}

//! `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! A scrape walks the routing table and encodes the atomics of [`Stats`] and of each replica's
//! state through `prometheus-client`'s encoder; scrapes are rare, requests are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::config::registry::Registry;
use crate::config::state::ReplicaState;
use crate::config::stats::{Histogram, Stats, FAILURE_REASONS, ROUTES, STATUS_CLASSES};
use crate::fleet::Fleet;
use crate::observe::trace::Traces;

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// `/metrics` as an HTTP response.
pub fn response<B: From<bytes::Bytes>>(
    registry: &Arc<Registry>,
    fleet: &Arc<Fleet>,
    traces: Option<&Traces>,
    draining: bool,
) -> http::Response<B> {
    let text = render(registry, fleet, traces, draining);
    let mut response = http::Response::new(B::from(bytes::Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The metrics text for the current routing table, the fleet's limits and the traces;
/// `draining`: a stop was requested.
pub fn render(
    registry: &Arc<Registry>,
    fleet: &Arc<Fleet>,
    traces: Option<&Traces>,
    draining: bool,
) -> String {
    let mut metrics = prometheus_client::registry::Registry::default();
    let counts = traces.map(|t| {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &t.counts;
        [load(&c.exported), load(&c.failed), load(&c.dropped)]
    });
    let scrape = Scrape(registry.clone(), fleet.clone(), draining, counts);
    metrics.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &metrics);
    out
}

/// Encodes everything at scrape time, straight from the atomics.
#[derive(Debug)]
struct Scrape(Arc<Registry>, Arc<Fleet>, bool, Option<[u64; 3]>);

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

        encode_replicas(registry, &mut encoder)?;
        let family = encoder.encode_descriptor(
            "bridge_draining",
            "1 once a stop was requested (/health answers 503) until the process exits",
            None,
            MetricType::Gauge,
        )?;
        gauge(family, i64::from(self.2))?;
        let family = encoder.encode_descriptor(
            "bridge_log_lines_dropped",
            "Log lines dropped because stderr did not take them as fast as they came (more than 4 MiB waiting)",
            None,
            MetricType::Counter,
        )?;
        counter(family, crate::observe::log::dropped())?;
        let failures = registry
            .dns_status
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        if !failures.is_empty() {
            let mut family = encoder.encode_descriptor(
                "bridge_dns_resolution_failures",
                "Resolutions of a discovered deployment's DNS name that failed or came back empty (its last addresses were kept)",
                None,
                MetricType::Counter,
            )?;
            for (name, count) in &failures {
                counter(family.encode_family(&[("name", name.as_str())])?, *count)?;
            }
        }
        if let Some(counts) = self.3 {
            let mut family = encoder.encode_descriptor(
                "bridge_trace_spans",
                "Spans by outcome: exported (the collector took them), failed (it refused or could not be reached), dropped (the export queue was full)",
                None,
                MetricType::Counter,
            )?;
            for (outcome, count) in ["exported", "failed", "dropped"].into_iter().zip(counts) {
                counter(family.encode_family(&[("outcome", outcome)])?, count)?;
            }
        }
        encode_fleet(&self.1, &mut encoder)
    }
}

/// Requests refused by limits, and the state of the link to the fleet's Redis.
fn encode_fleet(fleet: &Fleet, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "bridge_rate_limited_requests",
        "Requests refused with 429 by a key's or a model's limit, by key name, model and limit (rpm, tpm, tpd, max_concurrent)",
        None,
        MetricType::Counter,
    )?;
    for ((key, model, limit), count) in fleet.limited() {
        let set = [("key", key.as_str()), ("model", &model), ("limit", limit)];
        counter(family.encode_family(&set)?, count)?;
    }
    let Some(link) = fleet.link() else {
        return Ok(());
    };
    let gauges: [(&str, &str, i64); 3] = [
        (
            "bridge_limits_redis_up",
            "1 while limits are counted in Redis for the fleet; 0 while this instance enforces its share alone",
            i64::from(link.is_up()),
        ),
        (
            "bridge_limits_fleet_instances",
            "Live Bridge instances sharing the limits, at the last heartbeat",
            i64::try_from(link.instances()).unwrap_or(i64::MAX),
        ),
        (
            "bridge_limits_redis_rtt_microseconds",
            "The last round trip to Redis",
            i64::try_from(link.rtt().as_micros()).unwrap_or(i64::MAX),
        ),
    ];
    for (name, help, value) in gauges {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        gauge(family, value)?;
    }
    let family = encoder.encode_descriptor(
        "bridge_limits_redis_fallbacks",
        "Times Redis was lost and this instance fell back to enforcing its share of the limits alone",
        None,
        MetricType::Counter,
    )?;
    counter(family, link.fallbacks.load(Ordering::Relaxed))
}

/// Health, ejection and load of every replica.
fn encode_replicas(
    registry: &Registry,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    type Read = fn(&ReplicaState) -> i64;
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

//! OpenTelemetry traces: which requests are traced, and where their spans go.
//!
//! One [`Traces`] per process, made from `[tracing]` when Bridge starts. It decides at arrival
//! whether a request is traced, as OpenTelemetry's parent-based sampler does (a caller's
//! sampled `traceparent` is kept, an unsampled one is not, a root request is kept at
//! `sample_ratio` by its trace id, the same decision every instance makes). An untraced request
//! carries nothing and costs the `traceparent` look-up. A traced one carries a `Trace`
//! (`observe::spans`) whose spans are built from timestamps once the answer is
//! over, so nothing on the request path waits on telemetry.
//!
//! Spans go to the SDK's batch processor, which exports them from a thread of its own over
//! OTLP/HTTP (protobuf, through hyper). An unreachable collector costs a log line and
//! `bridge_trace_spans_total{outcome="failed"}`; a full queue drops spans (counted) instead of
//! holding memory.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::TokioCurrentThread;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
    SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::config::defaults::{DEFAULT_TRACE_EXPORT_TIMEOUT_MS, DEFAULT_TRACE_QUEUE};
use crate::config::traces::TraceSettings;

/// Spans exported, failed and dropped: `/metrics` reads them.
#[derive(Debug, Default)]
pub struct TraceCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans in batches the collector refused or never got.
    pub failed: AtomicU64,
    /// Spans dropped because the export queue was full.
    pub dropped: AtomicU64,
    /// Spans handed to the processor and not yet exported or failed.
    queued: AtomicUsize,
    /// The last export failed (a failure is logged once per outage).
    down: AtomicBool,
}

/// The process's tracing: the sampler, the propagator and the batch processor.
#[derive(Debug)]
pub struct Traces {
    processor: BatchSpanProcessor<TokioCurrentThread>,
    sampler: Sampler,
    propagator: TraceContextPropagator,
    ids: RandomIdGenerator,
    /// Bridge's instrumentation scope, on every span.
    pub scope: InstrumentationScope,
    /// What became of the spans.
    pub counts: Arc<TraceCounts>,
}

impl Traces {
    /// The exporter for `settings`; its thread starts now and idles until spans come.
    pub fn new(settings: &TraceSettings) -> Result<Self, String> {
        let timeout = Duration::from_millis(DEFAULT_TRACE_EXPORT_TIMEOUT_MS);
        let client = opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(settings.traces_url.clone())
            .with_timeout(timeout)
            .build()
            .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
        let counts = Arc::new(TraceCounts::default());
        let exporter = Counted {
            inner: exporter,
            counts: counts.clone(),
            url: settings.traces_url.clone(),
        };
        // The processor's timer outlasts the HTTP client's, so an export ends by itself.
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(DEFAULT_TRACE_QUEUE)
            .with_max_export_timeout(timeout * 2)
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter, TokioCurrentThread)
            .with_batch_config(config)
            .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Ok(Traces {
            processor,
            sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))),
            propagator: TraceContextPropagator::new(),
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("bridge")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            counts,
        })
    }

    /// The trace a request that arrived with `headers` joins (its id, and the caller's span:
    /// invalid for a root request), when the request is to be traced.
    pub fn sampled(&self, headers: &HeaderMap) -> Option<(TraceId, SpanContext)> {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let remote = parent.span().span_context().clone();
        let trace_id = if remote.is_valid() {
            remote.trace_id()
        } else {
            self.ids.new_trace_id()
        };
        let decision = self
            .sampler
            .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[])
            .decision;
        (decision == SamplingDecision::RecordAndSample).then_some((trace_id, remote))
    }

    /// A new span id, for the spans a trace makes as it ends.
    pub fn span_id(&self) -> opentelemetry::trace::SpanId {
        self.ids.new_span_id()
    }

    /// Hands finished spans to the batch processor, or counts them dropped when its queue is
    /// full.
    pub fn export(&self, spans: Vec<SpanData>) {
        let counts = &self.counts;
        let queued = counts.queued.fetch_add(spans.len(), Ordering::Relaxed);
        if queued + spans.len() > DEFAULT_TRACE_QUEUE {
            counts.queued.fetch_sub(spans.len(), Ordering::Relaxed);
            counts
                .dropped
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
            return;
        }
        for span in spans {
            self.processor.on_end(span);
        }
    }

    /// Exports what is queued, waiting at most `wait` (a collector that is down must not hold
    /// up a stop).
    pub fn shutdown(self: Arc<Self>, wait: Duration) {
        let (done, finished) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new()
            .name("bridge-trace-flush".into())
            .spawn(move || {
                let _ = self.processor.shutdown();
                let _ = done.send(());
            });
        if flushing.is_ok() && finished.recv_timeout(wait).is_err() {
            tracing::warn!("traces still queued at exit were not exported in time");
        }
    }
}

impl Drop for Traces {
    /// Ends the exporter's thread (its loop also waits on a ticker, so a closed channel alone
    /// would not end it). After [`Traces::shutdown`] this returns at once.
    fn drop(&mut self) {
        let _ = self.processor.shutdown();
    }
}

/// Takes an export's spans off the queue's count however the export ends; an export that never
/// finished (dropped at the processor's timeout) counts as failed.
struct Unqueue<'a> {
    counts: &'a TraceCounts,
    spans: usize,
    done: bool,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.counts.queued.fetch_sub(self.spans, Ordering::Relaxed);
        if !self.done {
            let spans = self.spans as u64;
            self.counts.failed.fetch_add(spans, Ordering::Relaxed);
        }
    }
}

/// The OTLP exporter, counting what became of each batch and logging an outage once.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counts: Arc<TraceCounts>,
    url: String,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The processor may drop this future when its own timer runs out: the guard still
        // takes the batch off the queue's count and counts it failed.
        let mut guard = Unqueue {
            counts: &self.counts,
            spans: batch.len(),
            done: false,
        };
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        guard.done = true;
        let counts = &self.counts;
        match &result {
            Ok(()) => {
                counts.exported.fetch_add(spans as u64, Ordering::Relaxed);
                if counts.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(collector = %self.url, "exporting traces again");
                }
            }
            Err(e) => {
                counts.failed.fetch_add(spans as u64, Ordering::Relaxed);
                if !counts.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(collector = %self.url, error = %e, "cannot export traces; spans are dropped until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(ratio: f64) -> Arc<Traces> {
        let settings = TraceSettings {
            traces_url: "http://127.0.0.1:9/v1/traces".into(),
            sample_ratio: ratio,
            service_name: "test".into(),
        };
        Arc::new(Traces::new(&settings).unwrap())
    }

    fn with_parent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        headers
    }

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    #[test]
    fn the_callers_decision_is_kept() {
        let none = traces(0.0);
        let sampled = with_parent(&format!("00-{TRACE}-b7ad6b7169203331-01"));
        let (trace_id, parent) = none
            .sampled(&sampled)
            .expect("a sampled caller is traced at ratio 0");
        assert_eq!(format!("{trace_id:032x}"), TRACE);
        assert_eq!(format!("{:016x}", parent.span_id()), "b7ad6b7169203331");
        assert!(parent.is_remote());

        let all = traces(1.0);
        let unsampled = with_parent(&format!("00-{TRACE}-b7ad6b7169203331-00"));
        assert!(
            all.sampled(&unsampled).is_none(),
            "an unsampled caller is not traced"
        );
    }

    #[test]
    fn root_requests_follow_the_ratio() {
        assert!(traces(0.0).sampled(&HeaderMap::new()).is_none());
        assert!(traces(1.0).sampled(&HeaderMap::new()).is_some());
        // Malformed context is no context: a root request.
        let (_, parent) = traces(1.0).sampled(&with_parent("00-zz-yy-01")).unwrap();
        assert!(!parent.is_valid());
        let half = traces(0.5);
        let kept = (0..2000)
            .filter(|_| half.sampled(&HeaderMap::new()).is_some())
            .count();
        assert!((800..1200).contains(&kept), "{kept} of 2000 kept at 0.5");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let traces = traces(1.0);
        let many = DEFAULT_TRACE_QUEUE + 1;
        // More spans than the queue holds, in one hand-over: all dropped, counted.
        let data = SpanData {
            span_context: opentelemetry::trace::SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "x".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: traces.scope.clone(),
        };
        traces.export(vec![data; many]);
        assert_eq!(traces.counts.dropped.load(Ordering::Relaxed), many as u64);
    }
}

//! One traced request's spans, built from what the stages noted once the answer is over.
//!
//! The stages only note instants (a few words each, and only for traced requests); the spans,
//! their attributes and ids are made when the [`Record`](super::record::Record) is dropped, then
//! handed to the batch processor. The tree:
//!
//! ```text
//! {operation} {model}    server  arrival → answer over; GenAI and Bridge attributes
//! ├─ park                        waiting for a waking deployment (each wait)
//! ├─ admit                       the limits' check (Redis included)
//! └─ engine              client  first attempt → answer over; its id is the engine's parent
//!    ├─ connect                  a new connection to the replica
//!    ├─ first byte               request sent → the engine's response head
//!    └─ stream | response body   response head → last byte (event: first token)
//! ```
//!
//! Attributes follow OpenTelemetry's GenAI conventions (`gen_ai.*`) plus Bridge's own
//! (`bridge.*`): the model id, deployment, replica and key *name*; never the key or the prompt.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;
use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::trace::Traces;

/// A span's name and its interval.
#[derive(Debug, Clone, Copy)]
struct Interval {
    name: &'static str,
    start: Instant,
    end: Instant,
}

/// What a traced request noted on its way; see the module doc for the spans it becomes.
#[derive(Debug)]
pub struct Trace {
    traces: Arc<Traces>,
    trace_id: TraceId,
    /// The caller's span (invalid when the request is a root).
    parent: SpanContext,
    root: SpanId,
    /// The engine span, named in the `traceparent` the engine receives.
    engine: SpanId,
    /// Wall clock at `at`: every span's times are reckoned from this pair.
    wall: SystemTime,
    at: Instant,
    /// The client's method.
    method: http::Method,
    /// The body's `model`, as the engine is asked for it.
    model: Option<String>,
    stream: bool,
    /// Children of the request span.
    stages: Vec<Interval>,
    /// Children of the engine span.
    engine_stages: Vec<Interval>,
    engine_start: Option<Instant>,
    head: Option<Instant>,
    attempts: u32,
    /// Attempts that failed and were tried again elsewhere.
    retries: Vec<Event>,
}

/// What the record knows when the answer is over.
#[derive(Debug)]
pub struct Ending<'a> {
    /// The route's metrics label (`chat/completions`, …).
    pub route: &'static str,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// The key's name (`-`: none).
    pub key: &'a str,
    /// The model id and deployment, once resolved.
    pub deployment: Option<(&'a str, &'a str)>,
    /// The replica's base URL.
    pub replica: Option<&'a str>,
    /// The status the client got (499: it left first).
    pub status: u16,
    /// The engine's usage.
    pub tokens: Option<(u64, u64)>,
    /// The first stream event.
    pub first_event: Option<Instant>,
    /// The client left before its answer was complete.
    pub cancelled: bool,
}

impl Trace {
    /// The trace of a request that arrived with `headers`, when it is to be traced (see
    /// [`Traces::sampled`]).
    pub fn start(traces: &Arc<Traces>, headers: &http::HeaderMap) -> Option<Box<Trace>> {
        let (trace_id, parent) = traces.sampled(headers)?;
        let (root, engine) = (traces.span_id(), traces.span_id());
        Some(Box::new(Trace {
            traces: traces.clone(),
            trace_id,
            parent,
            root,
            engine,
            method: http::Method::POST,
            wall: SystemTime::now(),
            at: Instant::now(),
            model: None,
            stream: false,
            stages: Vec::new(),
            engine_stages: Vec::new(),
            engine_start: None,
            head: None,
            attempts: 0,
            retries: Vec::new(),
        }))
    }

    /// The `traceparent` for the engine: this trace, the engine span as parent, sampled.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let value = format!("00-{:032x}-{:016x}-01", self.trace_id, self.engine);
        HeaderValue::from_str(&value).ok()
    }

    /// The client's method (`POST` unless told).
    pub fn method(&mut self, method: &http::Method) {
        self.method = method.clone();
    }

    /// The body's `model` and whether a stream was asked for.
    pub fn request(&mut self, model: Option<String>, stream: bool) {
        self.model = model;
        self.stream = stream;
    }

    /// A stage of the request that took from `start` until now (`park`, `admit`).
    pub fn stage(&mut self, name: &'static str, start: Instant) {
        let end = Instant::now();
        self.stages.push(Interval { name, start, end });
    }

    /// An attempt to reach a replica begins.
    pub fn attempt(&mut self) {
        self.attempts += 1;
        self.engine_start.get_or_insert_with(Instant::now);
    }

    /// The attempt opened a new connection, which took `took` from `start`.
    pub fn connected(&mut self, start: Instant, took: std::time::Duration) {
        let end = start + took;
        let name = "connect";
        self.engine_stages.push(Interval { name, start, end });
    }

    /// The engine's response head arrived for the request sent at `sent`.
    pub fn answered(&mut self, sent: Instant) {
        let end = Instant::now();
        let name = "first byte";
        self.engine_stages.push(Interval {
            name,
            start: sent,
            end,
        });
        self.head = Some(end);
    }

    /// The attempt on `replica` failed with `error` and may be tried again elsewhere.
    pub fn failed_attempt(&mut self, replica: &str, error: &str) {
        let attributes = vec![
            KeyValue::new("error.type", error.to_string()),
            KeyValue::new("bridge.replica", replica.to_string()),
        ];
        let event = Event::new("attempt failed", SystemTime::now(), attributes, 0);
        self.retries.push(event);
    }

    /// Builds the spans and hands them to the exporter.
    pub fn finish(mut self: Box<Self>, end: Ending<'_>) {
        let retries = std::mem::take(&mut self.retries);
        let now = Instant::now();
        let mut spans = Vec::with_capacity(3 + self.stages.len() + self.engine_stages.len());
        let failed = end.status >= 500;
        let status = |what: &str| {
            if failed {
                Status::error(format!("{what} ended with status {}", end.status))
            } else {
                Status::Unset
            }
        };
        let (operation, provider) = operation(end.route);
        let model = self
            .model
            .as_deref()
            .or(end.deployment.map(|(model, _)| model));
        let name = match model {
            Some(model) => format!("{operation} {model}"),
            None => operation.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", provider),
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("http.route", end.route),
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new("bridge.request_id", end.request_id.to_string()),
            KeyValue::new("bridge.key", end.key.to_string()),
            KeyValue::new("bridge.stream", self.stream),
        ];
        if let Some(model) = &self.model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
        }
        if let Some((model_id, deployment)) = end.deployment {
            attributes.push(KeyValue::new("bridge.model_id", model_id.to_string()));
            attributes.push(KeyValue::new("bridge.deployment", deployment.to_string()));
        }
        if let Some(replica) = end.replica {
            attributes.push(KeyValue::new("bridge.replica", replica.to_string()));
        }
        if let Some((input, output)) = end.tokens {
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            attributes.push(KeyValue::new("gen_ai.usage.input_tokens", clamp(input)));
            attributes.push(KeyValue::new("gen_ai.usage.output_tokens", clamp(output)));
        }
        if failed {
            attributes.push(KeyValue::new("error.type", end.status.to_string()));
        }
        if end.cancelled {
            attributes.push(KeyValue::new("bridge.cancelled", true));
        }
        let parent = if self.parent.is_valid() {
            self.parent.span_id()
        } else {
            SpanId::INVALID
        };
        let root = self.span(self.root, parent, Cow::Owned(name), SpanKind::Server);
        spans.push(SpanData {
            parent_span_is_remote: self.parent.is_valid(),
            attributes,
            status: status("the request"),
            ..root(self.at, now)
        });
        for stage in &self.stages {
            let id = self.traces.span_id();
            let span = self.span(id, self.root, stage.name.into(), SpanKind::Internal);
            spans.push(span(stage.start, stage.end));
        }
        if let Some(start) = self.engine_start {
            let engine = self.span(self.engine, self.root, "engine".into(), SpanKind::Client);
            let mut attributes = vec![KeyValue::new("bridge.attempts", i64::from(self.attempts))];
            if let Some(replica) = end.replica.and_then(|r| r.parse::<http::Uri>().ok()) {
                if let Some(host) = replica.host() {
                    attributes.push(KeyValue::new("server.address", host.to_string()));
                }
                if let Some(port) = replica.port_u16() {
                    attributes.push(KeyValue::new("server.port", i64::from(port)));
                }
            }
            let mut events = SpanEvents::default();
            events.events = retries;
            spans.push(SpanData {
                attributes,
                events,
                status: status("the engine request"),
                ..engine(start, now)
            });
            for stage in &self.engine_stages {
                let id = self.traces.span_id();
                let span = self.span(id, self.engine, stage.name.into(), SpanKind::Internal);
                spans.push(span(stage.start, stage.end));
            }
            if let Some(head) = self.head {
                let name = if self.stream {
                    "stream"
                } else {
                    "response body"
                };
                let id = self.traces.span_id();
                let body = self.span(id, self.engine, name.into(), SpanKind::Internal);
                let mut events = SpanEvents::default();
                if let Some(first) = end.first_event {
                    let at = self.time(first);
                    events
                        .events
                        .push(Event::new("first token", at, Vec::new(), 0));
                }
                spans.push(SpanData {
                    events,
                    ..body(head, now)
                });
            }
        }
        self.traces.export(spans);
    }

    /// A span of this trace, to be given its interval.
    fn span(
        &self,
        id: SpanId,
        parent: SpanId,
        name: Cow<'static, str>,
        kind: SpanKind,
    ) -> impl Fn(Instant, Instant) -> SpanData + '_ {
        let trace_state = self.parent.trace_state().clone();
        move |start, end| SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                id,
                TraceFlags::SAMPLED,
                false,
                trace_state.clone(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: kind.clone(),
            name: name.clone(),
            start_time: self.time(start),
            end_time: self.time(end),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.traces.scope.clone(),
        }
    }

    /// The wall-clock time of `instant`.
    fn time(&self, instant: Instant) -> SystemTime {
        match instant.checked_duration_since(self.at) {
            Some(after) => self.wall + after,
            None => self.wall - self.at.duration_since(instant),
        }
    }
}

/// GenAI's `gen_ai.operation.name` and `gen_ai.provider.name` for a route.
fn operation(route: &'static str) -> (&'static str, &'static str) {
    match route {
        "chat/completions" | "responses" => ("chat", "openai"),
        "messages" => ("chat", "anthropic"),
        "messages/count_tokens" => (route, "anthropic"),
        "completions" => ("text_completion", "openai"),
        "embeddings" => ("embeddings", "openai"),
        _ => (route, "openai"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::traces::TraceSettings;

    #[test]
    fn the_engine_gets_bridges_engine_span_as_parent() {
        let settings = TraceSettings {
            traces_url: "http://127.0.0.1:9/v1/traces".into(),
            sample_ratio: 0.0,
            service_name: "test".into(),
        };
        let traces = Arc::new(Traces::new(&settings).unwrap());
        let mut headers = http::HeaderMap::new();
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let caller = format!("00-{trace}-b7ad6b7169203331-01");
        headers.insert("traceparent", caller.parse().unwrap());
        let traced = Trace::start(&traces, &headers).expect("a sampled caller is traced");
        let sent = traced.traceparent().unwrap();
        let sent = sent.to_str().unwrap();
        assert_eq!(sent.len(), 55);
        assert!(sent.starts_with(&format!("00-{trace}-")) && sent.ends_with("-01"));
        assert!(
            !sent.contains("b7ad6b7169203331"),
            "the engine's parent is Bridge's span"
        );
        assert_eq!(&sent[36..52], format!("{:016x}", traced.engine));
    }
}

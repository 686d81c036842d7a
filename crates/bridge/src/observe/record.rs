//! The last stage of a request: what it did, recorded once it is over.
//!
//! A [`Record`] is created when a forwarded request arrives and learns as the stages run (key,
//! deployment, replica, status, stream events, the engine's usage). It travels with the request,
//! then inside the engine's response body, so it is dropped exactly when the client's answer
//! is over: fully sent, failed, or abandoned by the client. Dropping it counts the request in
//! [`Stats`] and writes the one request-log line. The log never holds the
//! key (only its name), the prompt or the answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::config::registry::{Deployment, Registry};
use crate::config::stats::Stats;
use crate::error::UpstreamFailure;
use crate::fleet::Admission;
use crate::observe::request_log::{self, Line};
use crate::observe::spans::{Ending, Trace};

/// Status logged and counted for a request whose client left before any answer (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// What one request did.
#[derive(Debug)]
pub struct Record {
    registry: Arc<Registry>,
    request_id: HeaderValue,
    start: Instant,
    /// Index into [`crate::config::stats::ROUTES`].
    route: usize,
    /// Index into the registry's key labels (0: no key).
    key: usize,
    deployment: Option<Arc<Deployment>>,
    replica: Option<usize>,
    /// Status sent to the client; 0 until known.
    status: u16,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    /// Prompt and completion tokens, from the engine's usage report.
    tokens: Option<(u64, u64)>,
    /// The answer ended (whole, or in error): dropping the record is no cancellation.
    settled: bool,
    /// Time spent waiting for engines (connecting, and until their response heads).
    upstream_wait: std::time::Duration,
    /// The request's hold on its key's and model's limits, settled with its usage at the end.
    admission: Option<Admission>,
    /// Present when the request is traced: its spans are made when it is over.
    trace: Option<Box<Trace>>,
}

impl Record {
    /// A record of a request that just arrived on `route` (an index into [`ROUTES`](crate::config::stats::ROUTES)).
    pub fn new(
        registry: Arc<Registry>,
        request_id: HeaderValue,
        route: usize,
        trace: Option<Box<Trace>>,
    ) -> Self {
        Record {
            registry,
            request_id,
            start: Instant::now(),
            route,
            key: 0,
            deployment: None,
            replica: None,
            status: 0,
            first_event: None,
            last_event: None,
            tokens: None,
            settled: false,
            upstream_wait: std::time::Duration::ZERO,
            admission: None,
            trace,
        }
    }

    /// The request's trace, when it is traced.
    pub fn trace(&mut self) -> Option<&mut Trace> {
        self.trace.as_deref_mut()
    }

    /// The caller's key label.
    pub fn set_key(&mut self, key: usize) {
        self.key = key;
    }

    /// The deployment serving the request: from now on it is counted as in flight there.
    pub fn set_deployment(&mut self, deployment: Arc<Deployment>) {
        // A replica index means nothing in another deployment (or generation).
        self.replica = None;
        deployment.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(previous) = self.deployment.replace(deployment) {
            previous.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The request was admitted by its limits: settled when it is over.
    pub fn admitted(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// The replica of the current attempt.
    pub fn set_replica(&mut self, index: usize) {
        self.replica = Some(index);
    }

    /// The status the client got.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Adds time spent waiting for an engine.
    pub fn waited(&mut self, time: std::time::Duration) {
        self.upstream_wait += time;
    }

    /// Bridge's own time so far: everything but waiting for engines.
    pub fn overhead(&self) -> std::time::Duration {
        self.start.elapsed().saturating_sub(self.upstream_wait)
    }

    /// The answer is over whatever happens to the rest of the body.
    pub fn settle(&mut self) {
        self.settled = true;
    }

    /// `count` stream events from the engine just arrived.
    pub fn events(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let now = Instant::now();
        let stats = self.deployment.as_ref().map(|d| &d.stats);
        match (self.last_event, stats) {
            (None, _) => self.first_event = Some(now),
            (Some(last), Some(stats)) => stats.inter_token.observe(now - last),
            (Some(_), None) => {}
        }
        if let Some(stats) = stats {
            // Events that arrived together are zero apart.
            for _ in 1..count {
                stats.inter_token.observe(std::time::Duration::ZERO);
            }
        }
        self.last_event = Some(now);
    }

    /// The engine's usage report (the last one counts).
    pub fn usage(&mut self, prompt: u64, completion: u64) {
        self.tokens = Some((prompt, completion));
    }

    /// An engine failure, by reason.
    pub fn upstream_error(&self, why: UpstreamFailure) {
        if let Some(deployment) = &self.deployment {
            deployment.stats.upstream_error(why);
        }
    }

    fn stats(&self) -> &Stats {
        self.deployment
            .as_ref()
            .map_or(&self.registry.unrouted, |d| &d.stats)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let duration = self.start.elapsed();
        let cancelled = !self.settled && self.deployment.is_some();
        if self.status == 0 {
            self.status = CLIENT_CLOSED;
        }
        let stats = self.stats();
        stats.finished(self.route, self.key, self.status, duration);
        let ttft = self.first_event.map(|first| first - self.start);
        if let Some(ttft) = ttft {
            stats.time_to_first_token.observe(ttft);
        }
        if let Some((prompt, completion)) = self.tokens {
            stats.tokens(self.key, prompt, completion);
        }
        if cancelled {
            stats.cancellations.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(admission) = self.admission.take() {
            // Tokens as reported; an error answer with no usage used none; an answer without a
            // report keeps its reservation spent.
            let used = self.tokens.map(|(p, c)| p.saturating_add(c));
            // A client that left (499) may have left an engine at work: its reservation stays.
            let failed = self.status >= 400 && self.status != CLIENT_CLOSED;
            admission.settle(used.or(failed.then_some(0)));
        }
        if let Some(deployment) = &self.deployment {
            deployment.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let deployment = self.deployment.as_deref();
        let replica = deployment
            .zip(self.replica)
            .and_then(|(d, i)| d.replicas.get(i))
            .map_or("-", |r| r.base.as_str());
        let key = self
            .registry
            .key_labels
            .get(self.key)
            .map_or("-", String::as_str);
        if let Some(trace) = self.trace.take() {
            trace.finish(Ending {
                route: crate::config::stats::ROUTES[self.route],
                request_id: &String::from_utf8_lossy(self.request_id.as_bytes()),
                key,
                deployment: deployment.map(|d| (d.model_id.as_str(), d.id.as_str())),
                replica: (replica != "-").then_some(replica),
                status: self.status,
                tokens: self.tokens,
                first_event: self.first_event,
                cancelled,
            });
        }
        let line = Line {
            request_id: self.request_id.as_bytes(),
            route: crate::config::stats::ROUTES[self.route],
            key,
            model: deployment.map_or("-", |d| d.model_id.as_str()),
            deployment: deployment.map_or("-", |d| d.id.as_str()),
            replica,
            status: self.status,
            duration,
            ttft,
            tokens: self.tokens,
            cancelled,
        };
        if !request_log::write(&line) {
            // No line writer installed (a library user's own subscriber): an ordinary event.
            let (prompt_tokens, completion_tokens) = self.tokens.unzip();
            tracing::info!(
                target: "bridge::request",
                request_id = %String::from_utf8_lossy(line.request_id),
                route = line.route,
                key,
                model = line.model,
                deployment = line.deployment,
                replica,
                status = self.status,
                duration_ms = duration.as_secs_f64() * 1000.0,
                ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0),
                prompt_tokens,
                completion_tokens,
                cancelled,
                "request finished"
            );
        }
    }
}

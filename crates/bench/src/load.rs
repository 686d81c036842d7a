//! Closed-loop load: `concurrency` workers, each on its own keep-alive connection, each sending
//! the next request as soon as the previous answer is fully read. Closed-loop load has no
//! coordinated-omission problem to correct for (there is no schedule to fall behind), and it is
//! stated as such in the report.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::procs::Result;

/// Where one arm sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub arm: &'static str,
    pub addr: String,
    /// Path of the chat completions route on this arm.
    pub path: String,
    /// Headers sent besides `host`, `content-type` and `content-length`.
    pub headers: &'static [(&'static str, &'static str)],
}

/// What the official Python SDK sends on every call besides those three (its `X-Stainless-*`
/// in lowercase, as hyper writes every name): real clients' requests, which cost a proxy more
/// than the bare request the other figures send.
pub const SDK_HEADERS: [(&str, &str); 14] = [
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("user-agent", "OpenAI/Python 1.99.0"),
    ("authorization", "Bearer sk-bench"),
    ("connection", "keep-alive"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "1.99.0"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-runtime", "CPython"),
    ("x-stainless-runtime-version", "3.11.2"),
    ("x-stainless-async", "false"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "600"),
];

/// Latencies in nanoseconds and counts of one run.
pub struct Run {
    pub latency: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in microseconds.
    pub fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Requests(u64),
    Time(Duration),
}

/// 1 ns to 10 minutes at 3 significant figures.
#[expect(
    clippy::expect_used,
    reason = "constant bounds that hdrhistogram always accepts"
)]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

pub fn request(target: &Target, body: &Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = target.path.parse().unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&target.addr).unwrap_or(http::HeaderValue::from_static("x")),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in target.headers {
        headers.insert(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    request
}

/// Runs closed-loop load against `target` and returns the merged result.
pub async fn closed_loop(
    target: &Target,
    body: Bytes,
    concurrency: usize,
    limit: Limit,
) -> Result<Run> {
    let budget = Arc::new(AtomicI64::new(match limit {
        Limit::Requests(n) => n as i64,
        Limit::Time(_) => i64::MAX,
    }));
    let deadline = match limit {
        Limit::Time(d) => Some(Instant::now() + d),
        Limit::Requests(_) => None,
    };
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (target, body, budget) = (target.clone(), body.clone(), budget.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = histogram();
            let (mut completed, mut errors) = (0u64, 0u64);
            let mut sender = connect(&target.addr).await?;
            while budget.fetch_sub(1, Ordering::Relaxed) > 0
                && deadline.is_none_or(|d| Instant::now() < d)
            {
                let sent = Instant::now();
                let ok = match sender.send_request(request(&target, &body)).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    let _ = latency.record(sent.elapsed().as_nanos() as u64);
                    completed += 1;
                } else {
                    errors += 1;
                    sender = connect(&target.addr).await?;
                }
            }
            Ok::<_, String>((latency, completed, errors))
        }));
    }
    let mut run = Run {
        latency: histogram(),
        completed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latency, completed, errors) = worker.await.map_err(|e| e.to_string())??;
        let _ = run.latency.add(&latency);
        run.completed += completed;
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// A chat request of about `size` bytes (the prompt padded), routed to model `bench`, with the
/// routing field last: the worst place for a scanner that has to find it.
pub fn chat_body(size: usize, extra: &str) -> Bytes {
    let head = r#"{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":""#;
    let tail = format!(r#""}}]{extra},"baseten":{{"model_id":"bench"}}}}"#);
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.extend(std::iter::repeat_n('a', pad));
    body.push_str(&tail);
    Bytes::from(body)
}

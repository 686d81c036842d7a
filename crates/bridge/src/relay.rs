//! Stage 5 of a request: relay the engine's answer.
//!
//! Success bodies are relayed as they arrive, never collected: JSON untouched, SSE event by
//! event through [`SseScanner`]. A stream that breaks, or ends without `data: [DONE]`, gets an
//! in-band error event and `[DONE]`, so a client never mistakes a truncated answer for a whole
//! one. Engine errors (non-2xx) are read (bounded) and normalised to the OpenAI envelope.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::body::{BoxError, ResBody};
use crate::error::ApiError;
use crate::pool::{TimedOut, UpstreamBody};
use crate::sse::SseScanner;

/// Largest engine error body read; past it the message is cut.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// Time allowed to read an engine's error body.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Response headers that describe the engine's connection, that Bridge sets itself, or that
/// would mislead Bridge's clients (the engine's cookies, its alternative services, its auth
/// challenges and security policies are about the engine, not about Bridge).
const STRIP_RESPONSE: [HeaderName; 12] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
    header::TRAILER,
    header::DATE,
    header::SERVER,
    header::SET_COOKIE,
    header::ALT_SVC,
    header::WWW_AUTHENTICATE,
    header::PROXY_AUTHENTICATE,
    header::STRICT_TRANSPORT_SECURITY,
];

/// More engine response headers that are connection-scoped under other names.
const STRIP_RESPONSE_NAMED: [&str; 3] = ["keep-alive", "proxy-connection", "x-request-id"];

/// Builds the client's response from the engine's.
/// `heartbeat`: send `: ping` comments on streams after this much engine silence.
/// `strip_usage`: Bridge asked the engine for a usage chunk the client did not ask for.
pub async fn relay(
    upstream: Response<UpstreamBody>,
    heartbeat: Option<Duration>,
    strip_usage: bool,
) -> Result<Response<ResBody>, ApiError> {
    let (mut parts, mut body) = upstream.into_parts();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        // Only a prefix is read: the answer is the error, not something the client left.
        body.settle();
        return Err(engine_error(parts.status, &parts.headers, body).await);
    }
    strip_response_headers(&mut parts.headers);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    if is_sse && is_compressed(&parts.headers) {
        // Bridge asks for identity; a compressed stream cannot be scanned, and Bridge never
        // inflates (so a compression bomb has nothing to explode in).
        return Err(compressed_stream());
    }
    let body = if is_sse {
        mark_sse(&mut parts.headers);
        ResBody::Sse(Box::new(StreamRelay::new(
            body,
            SseScanner::new(strip_usage),
            None,
            heartbeat,
        )))
    } else {
        let mut body = body;
        body.track_usage();
        ResBody::Upstream(body)
    };
    Ok(Response::from_parts(parts, body))
}

/// Removes hop-by-hop and misleading headers from an engine's response (those the engine
/// listed in its own `Connection` header too).
///
/// Only the names present are removed (usually `date`, `server`, `content-length`): removing
/// every unwanted name in turn would hash 15 names per response.
pub(crate) fn strip_response_headers(headers: &mut HeaderMap) {
    let listed = crate::upstream::connection_listed(headers);
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            STRIP_RESPONSE.contains(name)
                || STRIP_RESPONSE_NAMED.contains(&name.as_str())
                || listed.contains(name)
        })
        .cloned()
        .collect();
    for name in &present {
        headers.remove(name);
    }
}

/// Whether the engine compressed its answer despite `accept-encoding: identity`.
pub(crate) fn is_compressed(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
}

pub(crate) fn compressed_stream() -> ApiError {
    ApiError::bad_gateway(
        "the engine compressed its answer although Bridge asked for none (accept-encoding: identity)",
    )
    .with_code("upstream_compressed")
}

/// Headers of every relayed stream: no caching, and no buffering by a proxy in front of Bridge
/// (nginx honours `x-accel-buffering`), so events pass straight through.
pub(crate) fn mark_sse(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Reads an engine's error body (bounded in size and time) into an OpenAI-shaped error.
pub(crate) async fn engine_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: UpstreamBody,
) -> ApiError {
    let bytes = read_prefix(body, MAX_ERROR_BODY).await;
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The engine rejected *Bridge's* credentials: relaying 401 would tell the client its
        // own key is wrong, which it is not; and retrying will not help.
        let engine = ApiError::from_engine(status, &bytes);
        let mut error = ApiError::bad_gateway(format!(
            "the engine rejected Bridge's credentials ({status}: {}); check the deployment's api_key_env",
            engine.message
        ))
        .with_code("upstream_auth_failed");
        error.should_retry = Some(false);
        return error;
    }
    let mut error = ApiError::from_engine(status, &bytes);
    // An engine that is busy says when to come back; the SDKs honour it.
    error.retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    error
}

/// Up to `limit` bytes of `body`, within [`ERROR_BODY_TIMEOUT`]: a long or slow error body is
/// cut, never lost.
async fn read_prefix(mut body: UpstreamBody, limit: usize) -> Bytes {
    let mut out = Vec::new();
    let read = async {
        while out.len() < limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let take = data.len().min(limit - out.len());
                        out.extend_from_slice(&data[..take]);
                    }
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIMEOUT, read).await;
    Bytes::from(out)
}

/// How a relayed stream turns the engine's bytes into the client's events: the OpenAI relay
/// ([`SseScanner`]) passes events through, the predict adapter writes new ones.
pub trait StreamAdapter {
    /// One chunk of the engine's body; what the client should get goes to `out`. An error ends
    /// the stream with it, in band.
    fn feed(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ApiError>;

    /// The engine's body ended cleanly: end the client's stream properly (or in error).
    fn finish(&mut self, out: &mut VecDeque<Bytes>);

    /// The stream ends with `error` (the engine broke off or went silent): the in-band error
    /// event and `[DONE]`.
    fn fail(&mut self, error: ApiError, out: &mut VecDeque<Bytes>) {
        out.push_back(error.sse_event());
    }

    /// Events from the engine since the last call (for time to first token and the gaps
    /// between tokens).
    fn take_events(&mut self) -> u64;

    /// The engine's usage report, once it came.
    fn take_usage(&mut self) -> Option<(u64, u64)>;

    /// The answer is complete (`[DONE]` relayed) even if the engine's body has not ended.
    fn is_complete(&self) -> bool {
        false
    }
}

/// A stream relayed through an adapter: never ends silently, whatever the engine does.
pub struct StreamRelay<A> {
    upstream: UpstreamBody,
    adapter: A,
    /// Output ready to hand to the client (usually at most one slice).
    queue: VecDeque<Bytes>,
    finished: bool,
    /// Keep-alive comments while the engine is silent (a long time to first token).
    heartbeat: Option<Heartbeat>,
}

struct Heartbeat {
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// An SSE comment: ignored by SSE clients, but traffic for idle-timeout proxies on the way.
const PING: &[u8] = b": ping\n\n";

impl<A: StreamAdapter> StreamRelay<A> {
    /// `initial`: events to send before anything from the engine (an adapter's first chunk).
    pub fn new(
        upstream: UpstreamBody,
        adapter: A,
        initial: impl IntoIterator<Item = Bytes>,
        heartbeat: Option<Duration>,
    ) -> Self {
        StreamRelay {
            upstream,
            adapter,
            queue: initial.into_iter().collect(),
            finished: false,
            heartbeat: heartbeat.map(|every| Heartbeat {
                every,
                timer: Box::pin(tokio::time::sleep(every)),
            }),
        }
    }

    /// A ping when the engine has been silent for the heartbeat interval. Adapters emit only
    /// whole events, so the client's stream is always at an event boundary here.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        let heartbeat = self.heartbeat.as_mut()?;
        heartbeat.timer.as_mut().poll(cx).is_ready().then(|| {
            let next = tokio::time::Instant::now() + heartbeat.every;
            heartbeat.timer.as_mut().reset(next);
            Bytes::from_static(PING)
        })
    }

    /// Ends the stream with an engine-side failure: the answer is over, not abandoned.
    fn fail(&mut self, error: ApiError) {
        self.finished = true;
        self.upstream.settle();
        self.adapter.fail(error, &mut self.queue);
    }

    /// Tells the request's record what the adapter saw.
    fn note(&mut self) {
        let events = self.adapter.take_events();
        let usage = self.adapter.take_usage();
        if self.adapter.is_complete() {
            // The client has the whole answer: leaving now is no cancellation.
            self.upstream.settle();
        }
        if let Some(record) = self.upstream.record() {
            record.events(events);
            if let Some((prompt, completion)) = usage {
                record.usage(prompt, completion);
            }
        }
    }

    /// The engine's body, for the record it carries.
    pub fn upstream_mut(&mut self) -> &mut UpstreamBody {
        &mut self.upstream
    }
}

impl<A: StreamAdapter + Unpin> Body for StreamRelay<A> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let polled = Pin::new(&mut this.upstream).poll_frame(cx);
            if polled.is_pending() {
                if let Some(ping) = this.poll_ping(cx) {
                    return Poll::Ready(Some(Ok(Frame::data(ping))));
                }
            } else if let Some(heartbeat) = this.heartbeat.as_mut() {
                let next = tokio::time::Instant::now() + heartbeat.every;
                heartbeat.timer.as_mut().reset(next);
            }
            match ready!(polled) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let fed = this.adapter.feed(data, &mut this.queue);
                    this.note();
                    if let Err(error) = fed {
                        this.fail(error);
                    }
                }
                Some(Err(e)) if e.is::<TimedOut>() => {
                    this.fail(ApiError::gateway_timeout(format!("stream stopped: {e}")));
                }
                Some(Err(e)) => {
                    this.fail(
                        ApiError::bad_gateway(format!("the engine's stream broke: {e}"))
                            .with_code("upstream_stream_broken"),
                    );
                }
                None => {
                    this.finished = true;
                    this.adapter.finish(&mut this.queue);
                    this.note();
                }
            }
        }
    }
}

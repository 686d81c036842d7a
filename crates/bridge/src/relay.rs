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
use crate::sse::{SseScanner, MAX_EVENT_BYTES};

/// Largest engine error body read; past it the message is cut.
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// Time allowed to read an engine's error body.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Response headers that describe the engine's connection, or that Bridge sets itself.
const STRIP_RESPONSE: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
    header::TRAILER,
    header::DATE,
    header::SERVER,
];

/// Builds the client's response from the engine's.
/// `heartbeat`: send `: ping` comments on streams after this much engine silence.
pub async fn relay(
    upstream: Response<UpstreamBody>,
    heartbeat: Option<Duration>,
) -> Result<Response<ResBody>, ApiError> {
    let (mut parts, mut body) = upstream.into_parts();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        // Only a prefix is read: the answer is the error, not something the client left.
        body.settle();
        return Err(engine_error(parts.status, &parts.headers, body).await);
    }
    for name in &STRIP_RESPONSE {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    parts.headers.remove("x-request-id");
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    let body = if is_sse {
        mark_sse(&mut parts.headers);
        ResBody::Sse(Box::new(SseRelay::new(body, heartbeat)))
    } else {
        ResBody::Upstream(body)
    };
    Ok(Response::from_parts(parts, body))
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

/// A relayed SSE stream.
pub struct SseRelay {
    upstream: UpstreamBody,
    scanner: SseScanner,
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

impl SseRelay {
    pub fn new(upstream: UpstreamBody, heartbeat: Option<Duration>) -> Self {
        SseRelay {
            upstream,
            scanner: SseScanner::default(),
            queue: VecDeque::new(),
            finished: false,
            heartbeat: heartbeat.map(|every| Heartbeat {
                every,
                timer: Box::pin(tokio::time::sleep(every)),
            }),
        }
    }

    /// A ping when the engine has been silent for the heartbeat interval. Bridge forwards only
    /// whole events, so the client's stream is always at an event boundary here.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        let heartbeat = self.heartbeat.as_mut()?;
        heartbeat.timer.as_mut().poll(cx).is_ready().then(|| {
            let next = tokio::time::Instant::now() + heartbeat.every;
            heartbeat.timer.as_mut().reset(next);
            Bytes::from_static(PING)
        })
    }

    /// Ends the stream with an in-band error unless the engine already ended it properly.
    fn end(&mut self, reason: Option<ApiError>) {
        self.finished = true;
        if self.scanner.done {
            return;
        }
        if let Some(error) = reason {
            self.queue.push_back(error.sse_event());
        } else if self.scanner.errored {
            // The engine reported its own error; only the end marker is missing.
            self.queue
                .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        } else {
            let error = ApiError::bad_gateway(
                "the engine ended the stream without data: [DONE]; the answer may be incomplete",
            )
            .with_code("upstream_stream_incomplete");
            self.queue.push_back(error.sse_event());
        }
    }
}

impl Body for SseRelay {
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
                    if this.scanner.feed(data, &mut this.queue).is_err() {
                        let error = ApiError::bad_gateway(format!(
                            "the engine sent a stream event larger than {MAX_EVENT_BYTES} bytes"
                        ))
                        .with_code("upstream_event_too_large");
                        this.end(Some(error));
                    }
                }
                Some(Err(e)) if e.is::<TimedOut>() => {
                    let error = ApiError::gateway_timeout(format!("stream stopped: {e}"));
                    this.end(Some(error));
                }
                Some(Err(e)) => {
                    let error = ApiError::bad_gateway(format!("the engine's stream broke: {e}"))
                        .with_code("upstream_stream_broken");
                    this.end(Some(error));
                }
                None => {
                    this.scanner.finish(&mut this.queue);
                    this.end(None);
                }
            }
        }
    }
}

//! Relayed streams: an engine's body turned into the client's events by a [`StreamAdapter`],
//! never ending silently whatever the engine does.
//!
//! A stream that breaks, goes silent past its limit, or finishes without its terminal event
//! gets the adapter's in-band error and end instead, so a client never mistakes a truncated
//! answer for a whole one. Heartbeat comments keep idle-timeout proxies on the way open.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::futures::OwnedNotified;

use super::lifetime::{EngineBody, TimedOut};
use crate::body::BoxError;
use crate::error::ApiError;

/// How a relayed stream turns the engine's bytes into the client's events: the OpenAI relay
/// ([`SseScanner`](crate::dialect::openai::stream::SseScanner)) passes events through, the predict adapter writes new ones.
pub trait StreamAdapter: Send + Unpin {
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
pub struct StreamRelay<A: ?Sized> {
    upstream: EngineBody,
    /// Output ready to hand to the client (usually at most one slice).
    queue: VecDeque<Bytes>,
    finished: bool,
    /// Keep-alive comments while the engine is silent (a long time to first token).
    heartbeat: Option<Heartbeat>,
    /// Registered for the drain-timeout signal, once the engine first kept the stream waiting.
    cut_wait: Option<Pin<Box<OwnedNotified>>>,
    /// Last, so that a boxed relay of any adapter is a relay of `dyn StreamAdapter`.
    adapter: A,
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
        upstream: EngineBody,
        adapter: A,
        initial: impl IntoIterator<Item = Bytes>,
        heartbeat: Option<Duration>,
    ) -> Self {
        StreamRelay {
            upstream,
            adapter,
            queue: initial.into_iter().collect(),
            finished: false,
            cut_wait: None,
            heartbeat: heartbeat.map(|every| Heartbeat {
                every,
                timer: Box::pin(tokio::time::sleep(every)),
            }),
        }
    }
}

impl<A: StreamAdapter + ?Sized> StreamRelay<A> {
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

    /// Whether the worker's drain timeout passed (registers for the signal otherwise, so a
    /// stream waiting on a silent engine is woken by it).
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(cut) = self.upstream.cut() else {
            return false;
        };
        if cut.is_given() {
            return true;
        }
        let wait = self.cut_wait.get_or_insert_with(|| Box::pin(cut.wait()));
        // Registered before the flag is read again: a signal in between is not missed.
        wait.as_mut().enable();
        cut.is_given() || wait.as_mut().poll(cx).is_ready()
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
    pub fn upstream_mut(&mut self) -> &mut EngineBody {
        &mut self.upstream
    }
}

impl<A: StreamAdapter + ?Sized> Body for StreamRelay<A> {
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
                if this.poll_cut(cx) {
                    this.fail(ApiError::shutting_down());
                    continue;
                }
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

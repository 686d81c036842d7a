//! An engine's response body that carries the request's lifetime.
//!
//! The pool hands back a plain [`PooledBody`]; the request wraps it in an [`EngineBody`] that
//! holds everything which must last exactly as long as the client's answer: the replica's
//! in-flight count, the deployment's concurrency slot, the idle-gap and total timers, the end of
//! a JSON answer (where engines put `usage`), and the request's [`Record`]. When the client's
//! answer is over (sent, failed, or abandoned) the body is dropped and all of them with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep, sleep_until};

use crate::body::BoxError;
use crate::config::response_ids::{Made, ResponseIds};
use crate::config::state::InFlight;
use crate::error::UpstreamFailure;
use crate::fleet::Fleet;
use crate::observe::record::Record;
use crate::observe::usage::{JsonUsage, Key, Tail};
use crate::upstream::client::Cut;
use crate::upstream::pool::PooledBody;

/// An engine's response body, with the request's lifetime attached.
pub struct EngineBody {
    inner: PooledBody,
    /// Keeps the request counted against its replica until the body is gone.
    in_flight: Option<InFlight>,
    /// The deployment's concurrency slot, when it has a limit.
    slot: Option<OwnedSemaphorePermit>,
    /// Idle-gap and total time limits, when set.
    limits: Option<Box<Limits>>,
    /// What the request did, recorded when the body is gone (a cancellation if it had not
    /// ended).
    record: Option<Box<Record>>,
    /// The last bytes of a JSON answer, and how the dialect reads its usage there.
    usage_tail: Option<(Tail, JsonUsage)>,
    /// The worker's drain-timeout signal (streams end on it; see [`crate::relay::stream`]).
    cut: Option<Arc<Cut>>,
    /// For a Responses API answer: where it was made, to be remembered by its id.
    learn: Option<Box<Learner>>,
}

/// Remembers where a Responses API response was made, once its id is seen.
#[derive(Debug)]
pub struct Learner {
    /// The map of response ids.
    pub ids: Arc<ResponseIds>,
    /// Where this response is being made.
    pub made: Made,
    /// The start of a whole answer, kept until its id is found.
    pub start: Vec<u8>,
    /// Shares the id with the fleet (through Redis, when configured).
    pub fleet: Arc<Fleet>,
}

/// How much of a whole answer is searched for its id (it leads the object).
const ID_SEARCH_BYTES: usize = 8 << 10;

impl Learner {
    /// Learns the response id in `bytes`: the first `"id"` string (a whole response starts with
    /// it; in a stream, the `response.created` event's response holds it). False if none.
    pub fn learn_from(&self, bytes: &[u8]) -> bool {
        let Some(id) = first_id(bytes) else {
            return false;
        };
        self.ids.learn(id, self.made.clone());
        self.fleet.remember(id, &self.made);
        true
    }
}

static ID: Key = Key::new(b"\"id\"");

/// The value of the first `"id"` member in `bytes`, when it is a plain string.
fn first_id(bytes: &[u8]) -> Option<&str> {
    let at = ID.find(bytes)?;
    let rest = bytes[at + 4..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Time limits on a response body. Its timers are made when the body first waits for the
/// engine: a whole answer that came with its head (most non-stream answers) needs none.
struct Limits {
    idle: Duration,
    total_deadline: Option<tokio::time::Instant>,
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    total_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A response body that went silent for longer than allowed, or outlived its total time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

impl Body for EngineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some(expired) = self.limits.as_mut().and_then(|l| l.expired(cx)) {
                    self.inner.discard();
                    self.failed(UpstreamFailure::Timeout);
                    return Poll::Ready(Some(Err(Box::new(TimedOut(expired)))));
                }
                return Poll::Pending;
            }
        };
        if let (Some(Ok(frame)), Some(learner)) = (&frame, &mut self.learn) {
            // The id leads the answer, but a frame may end before it, or inside it: the
            // answer's start is kept (a few KiB at most) and searched whole.
            if let Some(data) = frame.data_ref() {
                let room = ID_SEARCH_BYTES.saturating_sub(learner.start.len());
                learner
                    .start
                    .extend_from_slice(&data[..data.len().min(room)]);
            }
            let found = learner.learn_from(&learner.start);
            if found || learner.start.len() >= ID_SEARCH_BYTES {
                self.learn = None;
            }
        }
        match &frame {
            None => self.finish(),
            Some(Ok(frame)) if self.inner.is_end_stream() => {
                if let (Some((tail, _)), Some(data)) = (self.usage_tail.as_mut(), frame.data_ref())
                {
                    tail.push(data);
                }
                self.finish();
            }
            Some(Err(_)) => self.failed(UpstreamFailure::Reset),
            Some(Ok(frame)) => {
                if let (Some((tail, _)), Some(data)) = (self.usage_tail.as_mut(), frame.data_ref())
                {
                    tail.push(data);
                }

                if let Some(limits) = self.limits.as_mut() {
                    let idle = limits.idle;
                    if let Some(timer) = limits.idle_timer.as_mut() {
                        timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                }
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Limits {
    /// Which limit expired, if one did (registers the timers' wake-ups otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<String> {
        let idle = self.idle;
        let idle_timer = self.idle_timer.get_or_insert_with(|| Box::pin(sleep(idle)));
        if idle_timer.as_mut().poll(cx).is_ready() {
            return Some(format!(
                "the engine sent nothing for {} ms",
                self.idle.as_millis()
            ));
        }
        let deadline = self.total_deadline?;
        let total = self
            .total_timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        total
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| "the request exceeded its total time limit".to_string())
    }
}

impl EngineBody {
    /// `inner`, with nothing attached yet.
    pub fn new(inner: PooledBody) -> Self {
        EngineBody {
            inner,
            in_flight: None,
            slot: None,
            limits: None,
            record: None,
            usage_tail: None,
            cut: None,
            learn: None,
        }
    }

    /// Ends this answer, if it is a stream, when the worker's drain timeout passes.
    pub fn cut_by(&mut self, cut: &Arc<Cut>) {
        self.cut = Some(cut.clone());
    }

    /// Remembers where this (Responses API) answer was made, by its id: read from the body's
    /// first bytes, unless a stream relay takes the learner to read it from its events.
    pub fn learn_response_id(&mut self, learner: Learner) {
        self.learn = Some(Box::new(learner));
    }

    /// The learner, for a stream relay that reads the id from the events.
    pub fn take_learner(&mut self) -> Option<Learner> {
        self.learn.take().map(|l| *l)
    }

    /// The drain-timeout signal, when set.
    pub fn cut(&self) -> Option<&Arc<Cut>> {
        self.cut.as_ref()
    }

    /// Limits the silence between chunks to `idle`, and the whole request to `total_deadline`.
    pub fn limit(&mut self, idle: Duration, total_deadline: Option<tokio::time::Instant>) {
        self.limits = Some(Box::new(Limits {
            idle,
            total_deadline,
            idle_timer: None,
            total_timer: None,
        }));
    }

    /// Counts this response against its replica, and holds its deployment slot, until the
    /// body ends or is dropped.
    pub fn hold(&mut self, in_flight: InFlight, slot: Option<OwnedSemaphorePermit>) {
        self.in_flight = Some(in_flight);
        self.slot = slot;
    }

    /// Hands the request's record to the body: it is recorded when the body is gone.
    pub fn attach(&mut self, record: Record) {
        self.record = Some(Box::new(record));
    }

    /// The request's record, once attached.
    pub fn record(&mut self) -> Option<&mut Record> {
        self.record.as_deref_mut()
    }

    /// Keeps the end of this (JSON) body to count the `usage` the engine reports in it, read
    /// by `read`.
    pub fn track_usage(&mut self, read: JsonUsage) {
        self.usage_tail = Some((Tail::default(), read));
    }

    /// The request is over whatever happens to the rest of the body (it ended, failed, or is
    /// being read only in part on purpose): dropping it is no cancellation.
    pub fn settle(&mut self) {
        if let Some(record) = self.record.as_mut() {
            record.settle();
        }
    }

    /// The engine broke off or went silent.
    fn failed(&mut self, why: UpstreamFailure) {
        if let Some(record) = self.record.as_mut() {
            record.upstream_error(why);
            record.settle();
        }
    }

    fn finish(&mut self) {
        if let (Some((tail, read)), Some(record)) = (self.usage_tail.take(), self.record.as_mut()) {
            if let Some((prompt, completion)) = tail.usage(read) {
                record.usage(prompt, completion);
            }
        }
        self.settle();
    }
}

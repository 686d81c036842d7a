//! Body types on both sides of the proxy.
//!
//! [`ReqBody`] is the request sent upstream: a few slices of the client's body (everything but
//! the cut-out routing field), handed to hyper as separate frames so that nothing is copied; hyper
//! writes them with vectored I/O. [`ResBody`] is what the client receives: a small in-memory body,
//! an engine's body passed through untouched, or a stream being relayed event by event.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::pool::UpstreamBody;
use crate::predict::stream::PredictEvents;
use crate::relay::StreamRelay;
use crate::sse::SseScanner;

/// Errors a response body can end with; hyper then aborts the connection, which is the only
/// honest way to end a non-stream body that broke halfway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body made of byte slices that share the client body's buffer.
#[derive(Debug, Default, Clone)]
pub struct ReqBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl ReqBody {
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        ReqBody { parts, remaining }
    }

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The parts joined into one buffer (a copy; for tests and adapters, not the proxy path).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.remaining as usize);
        for part in &self.parts {
            out.extend_from_slice(part);
        }
        Bytes::from(out)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.parts.pop_front();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// What Bridge sends to its client.
pub enum ResBody {
    /// A body Bridge made itself (errors, model lists, health).
    Full(Option<Bytes>),
    /// An engine's non-stream body, relayed as it arrives.
    Upstream(UpstreamBody),
    /// An engine's SSE stream, relayed event by event with failures turned into in-band errors.
    Sse(Box<StreamRelay<SseScanner>>),
    /// A predict model's text stream, adapted to OpenAI chunk events.
    Predict(Box<StreamRelay<PredictEvents>>),
}

impl ResBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResBody::Full(Some(bytes.into()))
    }

    /// The engine's body this answer is still relaying, if any.
    pub fn upstream_mut(&mut self) -> Option<&mut UpstreamBody> {
        match self {
            ResBody::Full(_) => None,
            ResBody::Upstream(body) => Some(body),
            ResBody::Sse(relay) => Some(relay.upstream_mut()),
            ResBody::Predict(relay) => Some(relay.upstream_mut()),
        }
    }

    pub fn empty() -> Self {
        ResBody::Full(None)
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            ResBody::Sse(relay) => Pin::new(relay.as_mut()).poll_frame(cx),
            ResBody::Predict(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Full(bytes) => bytes.is_none(),
            ResBody::Upstream(inner) => inner.is_end_stream(),
            ResBody::Sse(_) | ResBody::Predict(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
            ResBody::Upstream(inner) => inner.size_hint(),
            ResBody::Sse(_) | ResBody::Predict(_) => SizeHint::default(),
        }
    }
}

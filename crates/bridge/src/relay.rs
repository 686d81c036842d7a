//! Relay: what the client receives, and the machinery that carries an engine's answer to it.
//!
//! [`ResBody`] is every body Bridge sends: one it made itself, an engine's body passed through
//! untouched, or an engine's stream relayed event by event through a dialect's or an engine
//! kind's [`StreamAdapter`]. Adding a dialect adds an adapter, not a
//! variant here.
//!
//! - [`lifetime`]: the engine's body carrying the request's lifetime (in-flight count, slot,
//!   timers, usage, record).
//! - [`stream`]: the stream relay and the adapter trait.
//! - [`head`]: the answer's headers, and engine errors read into the envelope.

pub mod head;
pub mod lifetime;
pub mod stream;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use lifetime::EngineBody;
use stream::{StreamAdapter, StreamRelay};

/// What Bridge sends to its client.
pub enum ResBody {
    /// A body Bridge made itself (errors, model lists, health).
    Full(Option<Bytes>),
    /// An engine's non-stream body, relayed as it arrives.
    Engine(EngineBody),
    /// An engine's stream, relayed through an adapter with failures turned into in-band errors.
    Stream(Box<StreamRelay<dyn StreamAdapter>>),
}

impl From<Bytes> for ResBody {
    fn from(bytes: Bytes) -> Self {
        ResBody::Full(Some(bytes))
    }
}

impl ResBody {
    /// A body Bridge made itself.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResBody::Full(Some(bytes.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        ResBody::Full(None)
    }

    /// A stream relayed through `adapter`.
    pub fn stream<A: StreamAdapter + 'static>(relay: StreamRelay<A>) -> Self {
        ResBody::Stream(Box::new(relay))
    }

    /// The engine's body this answer is still relaying, if any.
    pub fn engine_mut(&mut self) -> Option<&mut EngineBody> {
        match self {
            ResBody::Full(_) => None,
            ResBody::Engine(body) => Some(body),
            ResBody::Stream(relay) => Some(relay.upstream_mut()),
        }
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
            ResBody::Engine(inner) => Pin::new(inner).poll_frame(cx),
            ResBody::Stream(relay) => Pin::new(relay.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Full(bytes) => bytes.is_none(),
            ResBody::Engine(inner) => inner.is_end_stream(),
            ResBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
            ResBody::Engine(inner) => inner.size_hint(),
            ResBody::Stream(_) => SizeHint::default(),
        }
    }
}

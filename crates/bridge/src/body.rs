//! The request body Bridge sends to engines, and the error type of every body.
//!
//! [`ReqBody`] is the request sent upstream: a few slices of the client's body (everything but
//! the cut-out routing field), handed to hyper as separate frames so that nothing is copied; hyper
//! writes them with vectored I/O. What the client receives is [`crate::relay::ResBody`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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
    /// A body of these parts, in order (empty ones are skipped).
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        // Through a `Vec`: collecting a `Vec`'s parts reuses its buffer, and a `VecDeque` takes it
        // over as it is (collected straight into a `VecDeque`, the filtered parts grew one).
        let mut parts: Vec<Bytes> = parts.into_iter().collect();
        parts.retain(|p| !p.is_empty());
        let parts = VecDeque::from(parts);
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        ReqBody { parts, remaining }
    }

    /// No body.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Bytes left to send.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Nothing left to send.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The parts, in order (written to the engine with vectored I/O, never joined).
    pub fn parts(&self) -> impl Iterator<Item = &Bytes> {
        self.parts.iter()
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

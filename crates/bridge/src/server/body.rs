//! The client's request body, and the socket it shares with its connection.
//!
//! A body that came whole with its head (a small JSON request, nearly always) is one buffer and
//! never touches the socket. Any other body reads from the socket itself: it sends the
//! `100 Continue` its client may wait for when first polled, decodes length or chunked framing,
//! and once it has ended hands the bytes read beyond it (the next pipelined request) back to
//! its connection. A body dropped before its end hands nothing back, and the connection closes
//! after the answer: its next request's start is unknown.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::head::BodyLength;
use crate::body::BoxError;
use crate::upstream::conn::read_draining;
use crate::upstream::wire::{Decoded, Decoder, Framing, WireError};

/// The interim answer to `expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// A body read this far into its buffer at once, at most (its frames are joined by the read
/// stage; a smaller read only means more of them).
const READ_AHEAD: usize = 64 << 10;
/// A body of a declared length up to this (and over [`READ_AHEAD`]) is read into one buffer
/// sized for it and handed on as one frame, which the read stage keeps as it is: joining its
/// 64 KiB frames was a copy of the whole body (~1M instructions for 1 MiB).
const WHOLE_MAX: u64 = 4 << 20;
/// What bodies still being read may hold reserved that way, across the process. A client that
/// declares a length and sends little makes Bridge reserve all of it, so slow clients together
/// never reserve more than this; past it, bodies are read in frames, as smaller ones are.
const WHOLE_BUDGET: usize = 64 << 20;
static RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of [`WHOLE_BUDGET`] a body holds until it is whole (or dropped).
#[derive(Debug)]
struct Reservation(usize);

impl Reservation {
    /// `bytes` of the budget, if that much is left.
    fn take(bytes: usize) -> Option<Self> {
        let fits = |held: usize| held.checked_add(bytes).filter(|&h| h <= WHOLE_BUDGET);
        RESERVED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, fits)
            .ok()
            .map(|_| Reservation(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A client connection's socket, shared by the connection and its request's body.
#[derive(Debug)]
pub struct Shared {
    /// The socket (reads and writes through `&self`: tokio tracks readiness per direction).
    pub io: TcpStream,
    /// Where an ended body leaves the bytes read beyond it.
    back: Mutex<Option<BytesMut>>,
}

impl Shared {
    /// Shares `io`.
    pub fn new(io: TcpStream) -> Arc<Self> {
        Arc::new(Shared {
            io,
            back: Mutex::new(None),
        })
    }

    /// What an ended body handed back, once.
    pub fn take_back(&self) -> Option<BytesMut> {
        self.back.lock().ok()?.take()
    }
}

/// Reads what the socket has into `buf`, reserving `want` bytes first (for a body's bytes,
/// read straight into the buffer the body's frames share; heads are read through
/// [`crate::upstream::conn::poll_read_copied`]); `Ok(0)` at the end of the client's input.
fn poll_read(
    io: &TcpStream,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(io.poll_read_ready(cx))?;
        buf.reserve(want);
        let spare = buf.capacity() - buf.len();
        match read_draining(io, |io| Ok((io.try_read_buf(buf)?, spare))) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}

/// A request body.
#[derive(Debug)]
pub struct ClientBody(Kind);

#[derive(Debug)]
enum Kind {
    /// Whole already (or empty).
    Whole(Option<Bytes>),
    /// Read from the socket as it is polled.
    Reading(Box<Reading>),
}

#[derive(Debug)]
struct Reading {
    shared: Arc<Shared>,
    buf: BytesMut,
    decoder: Decoder,
    /// Bytes of `100 Continue` still to write before the first read.
    continue_left: usize,
    /// The bytes beyond the body went back to the connection.
    handed_back: bool,
    /// Whether the body is read whole into one buffer was decided (at its first poll: after
    /// the read stage checked its declared length against the limit).
    sized: bool,
    /// Held while the body is read whole into one buffer.
    whole: Option<Reservation>,
}

impl ClientBody {
    /// A body already in memory.
    pub fn whole(bytes: Bytes) -> Self {
        ClientBody(Kind::Whole((!bytes.is_empty()).then_some(bytes)))
    }

    /// A body read from `shared`'s socket, starting with the bytes already in `buf`.
    pub fn reading(shared: Arc<Shared>, buf: BytesMut, length: BodyLength, expect: bool) -> Self {
        let framing = match length {
            BodyLength::Length(n) => Framing::Length(n),
            BodyLength::Chunked => Framing::Chunked,
        };
        // A client that has sent body bytes already is not waiting for the interim answer.
        let continue_left = if expect && buf.is_empty() {
            CONTINUE.len()
        } else {
            0
        };
        ClientBody(Kind::Reading(Box::new(Reading {
            shared,
            buf,
            decoder: Decoder::new(framing),
            continue_left,
            handed_back: false,
            sized: false,
            whole: None,
        })))
    }
}

impl Reading {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        if !self.sized {
            self.sized = true;
            if let Decoder::Length(left @ 0..=WHOLE_MAX) = self.decoder {
                let left = left as usize;
                if left.saturating_sub(self.buf.len()) > READ_AHEAD {
                    self.whole = Reservation::take(left);
                }
            }
        }
        loop {
            let short = match self.decoder {
                Decoder::Length(left) => (self.buf.len() as u64) < left,
                _ => false,
            };
            // Read whole: nothing is decoded before all of it is in.
            let decoded = match self.whole.is_some() && short {
                true => Ok(Decoded::NeedMore),
                false => self.decoder.decode(&mut self.buf),
            };
            match decoded {
                Ok(Decoded::Data(data)) => {
                    self.whole = None;
                    if self.decoder.is_done() {
                        self.hand_back();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Decoded::End) => {
                    self.hand_back();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(WireError::Invalid(why)) => {
                    return Poll::Ready(Some(Err(format!("invalid chunked body: {why}").into())))
                }
                Err(WireError::Incomplete) => return Poll::Ready(Some(Err(incomplete()))),
            }
            while self.continue_left > 0 {
                ready!(self.shared.io.poll_write_ready(cx))?;
                let sent = CONTINUE.len() - self.continue_left;
                match self.shared.io.try_write(&CONTINUE[sent..]) {
                    Ok(n) => self.continue_left -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                }
            }
            let want = match self.decoder {
                // Room for all of it at once: the buffer then never grows (grown, it is copied).
                Decoder::Length(left) if self.whole.is_some() => {
                    (left as usize).saturating_sub(self.buf.len())
                }
                Decoder::Length(left) => {
                    usize::try_from(left).map_or(READ_AHEAD, |l| l.min(READ_AHEAD))
                }
                _ => 8 << 10,
            };
            match ready!(poll_read(&self.shared.io, &mut self.buf, want.max(1), cx)) {
                Ok(0) => return Poll::Ready(Some(Err(incomplete()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn hand_back(&mut self) {
        if !self.handed_back {
            self.handed_back = true;
            if let Ok(mut back) = self.shared.back.lock() {
                *back = Some(std::mem::take(&mut self.buf));
            }
        }
    }
}

fn incomplete() -> BoxError {
    "the client closed the connection before its request body was complete".into()
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Reading(reading) => reading
                .poll_next(cx)
                .map(|next| next.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Whole(bytes) => bytes.is_none(),
            Kind::Reading(reading) => reading.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Reading(reading) => match reading.decoder {
                Decoder::Length(left) => SizeHint::with_exact(left),
                Decoder::Done => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    /// The frames of a `len`-byte body its client writes in 16 KiB pieces.
    async fn frames(len: usize) -> Vec<Bytes> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn({
            let sent = sent.clone();
            async move {
                let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
                for piece in sent.chunks(16 << 10) {
                    client.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                client
            }
        });
        let (io, _) = listener.accept().await.unwrap();
        let mut body = ClientBody::reading(
            Shared::new(io),
            BytesMut::new(),
            BodyLength::Length(len as u64),
            false,
        );
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        drop(writer.await.unwrap());
        assert_eq!(frames.concat(), sent);
        frames
    }

    #[tokio::test]
    async fn a_body_of_a_declared_size_comes_whole_in_one_frame() {
        assert_eq!(frames(1 << 20).await.len(), 1);
        // Past the size read whole, frames as they come (their bytes checked all the same).
        assert!(!frames((WHOLE_MAX + 1) as usize).await.is_empty());
    }

    #[test]
    fn the_budget_for_bodies_read_whole_is_bounded_and_given_back() {
        let most = Reservation::take(WHOLE_BUDGET - (8 << 20)).unwrap();
        assert!(Reservation::take(16 << 20).is_none());
        drop(most);
        assert!(Reservation::take(16 << 20).is_some());
    }
}

//! One keep-alive connection to an engine, and the response body read from it.
//!
//! A [`Conn`] is a socket and its read buffer, used by one request at a time: the request is
//! written with one vectored write (head and the body's slices), the head read and parsed, and
//! the body handed out as [`PooledBody`], which owns the connection until the body ends and
//! then gives it back to its pool. Nothing runs while a connection is idle; whether the engine
//! closed it meanwhile is read from the socket's readiness when it is checked out.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::pool::GiveBack;
use super::wire::{parse_head, Decoded, Decoder, Framing, Head, Parsed, WireError};
use crate::body::ReqBody;

/// Reads go into a per-thread buffer of this size and are copied into the connection's own
/// buffer, which so holds only bytes not yet handed on: a stream's connection keeps no fixed
/// read buffer for as long as the stream lasts, and the space a read may fill is zeroed once per
/// thread, not per read (safe code: no uninitialized memory).
const READ_SPACE: usize = 64 << 10;
/// A connection to an engine.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// Why no response head came.
#[derive(Debug)]
pub enum HeadError {
    /// The engine closed the connection without sending a byte.
    ClosedEmpty,
    /// Anything else: a reset, a head cut short, bytes that are not HTTP.
    Failed(String),
}

impl Conn {
    /// A connection over a connected socket (boxed: it moves between the pool and bodies).
    pub fn new(io: TcpStream) -> Box<Self> {
        let _ = io.set_nodelay(true);
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
        })
    }

    /// Still usable after lying idle: the engine neither closed it nor sent anything. Reads
    /// the readiness tokio already has; a system call only when that readiness may be stale.
    pub fn idle_ok(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self
            .io
            .poll_read_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Writes the request: `head`, then the body's slices, in as few writes as the socket
    /// takes.
    pub async fn write_request(&mut self, head: &[u8], body: &ReqBody) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = std::iter::once(head)
            .chain(body.parts().map(|p| &p[..]))
            .map(IoSlice::new)
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.io.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    /// Reads until a final response head (informational ones are skipped).
    pub async fn read_head(&mut self, method: &Method) -> Result<Head, HeadError> {
        let mut received = false;
        loop {
            match parse_head(&mut self.buf, method) {
                Ok(Parsed::Final(head)) => return Ok(head),
                Ok(Parsed::Informational(len)) => {
                    let _ = self.buf.split_to(len);
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(HeadError::Failed(e.to_string())),
            }
            match std::future::poll_fn(|cx| self.poll_read_more(cx)).await {
                Ok(0) if !received => return Err(HeadError::ClosedEmpty),
                Ok(0) => return Err(HeadError::Failed(WireError::Incomplete.to_string())),
                Ok(_) => received = true,
                Err(e) => return Err(HeadError::Failed(e.to_string())),
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the connection.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        thread_local! {
            static SPACE: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SPACE].into_boxed_slice());
        }
        SPACE.with(|space| {
            let mut local;
            let mut shared = space.try_borrow_mut();
            let space: &mut [u8] = match shared.as_deref_mut() {
                Ok(space) => space,
                Err(_) => {
                    local = vec![0; 4096];
                    &mut local
                }
            };
            let mut space = ReadBuf::new(space);
            let polled = Pin::new(&mut self.io).poll_read(cx, &mut space);
            polled.map_ok(|()| {
                self.buf.extend_from_slice(space.filled());
                space.filled().len()
            })
        })
    }
}

/// A response read from `conn`, its body delimited as its head says.
pub fn response(conn: Box<Conn>, head: Head, give_back: GiveBack) -> Response<PooledBody> {
    let mut body = PooledBody {
        decoder: Decoder::new(head.framing),
        exact: match head.framing {
            Framing::Length(n) => Some(n),
            Framing::Empty => Some(0),
            _ => None,
        },
        conn: Some(conn),
        give_back: head.keep_alive.then_some(give_back),
    };
    if body.decoder.is_done() {
        body.finish();
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = head.headers;
    response
}

/// An engine's response body; finishing it returns the connection to the pool, dropping it
/// early (or [`PooledBody::discard`]) closes the connection, which is how an engine learns
/// that the client left.
#[derive(Debug)]
pub struct PooledBody {
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    /// The body's length when the head said it.
    exact: Option<u64>,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    /// The connection must not be reused (the body will not be read to its end cleanly): it
    /// closes when the body is dropped.
    pub fn discard(&mut self) {
        self.give_back = None;
    }

    /// The body is over: the connection goes back to its pool if it can carry another request.
    fn finish(&mut self) {
        let (Some(conn), Some(giver)) = (self.conn.take(), self.give_back.take()) else {
            return;
        };
        // Bytes beyond the body are not an answer to anything: such a connection is closed.
        if conn.buf.is_empty() {
            giver.give_back(conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.give_back = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if let Some(left) = this.exact.as_mut() {
                        *left -= data.len() as u64;
                    }
                    // Servers stop polling a body of known length once it is all written, so
                    // the end is acted on with the last data, not only on `None`.
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return this.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) => match this.decoder.at_eof() {
                    Ok(_) => {
                        // Delimited by the close: done, and not reusable.
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(io::Error::new(io::ErrorKind::UnexpectedEof, e)),
                },
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done() || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.exact
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

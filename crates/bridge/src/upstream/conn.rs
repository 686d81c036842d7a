//! One keep-alive connection to an engine, and the response body read from it.
//!
//! A [`Conn`] is a socket and its read buffer, used by one request at a time: the request is
//! written with one vectored write (head and the body's slices), the head read and parsed, and
//! the body read by a [`Reading`], which owns the connection until the body ends and then hands
//! it back if it can carry another request (the pool wraps it: [`super::pool::PooledBody`]).
//! Nothing runs while a connection is idle; whether the engine closed it meanwhile is read from
//! the socket's readiness when it is checked out.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{Method, Response, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::wire::{parse_head, Decoded, Decoder, Parsed, WireError};
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
    /// The connection failed: a reset, or a head cut short.
    Closed(String),
    /// The engine's bytes are not a response head Bridge reads.
    Invalid(WireError),
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
    /// (An idle connection's buffer is empty: only such connections are handed back.)
    pub fn idle_ok(&self) -> bool {
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

    /// Reads until a final response head (informational ones are skipped), and returns the
    /// response whose body reads on from this connection.
    pub async fn read_response(
        mut self: Box<Self>,
        method: &Method,
    ) -> Result<Response<Reading>, HeadError> {
        let mut received = false;
        loop {
            match parse_head(&mut self.buf, method) {
                Ok(Parsed::Final(head)) => {
                    let body = Reading {
                        decoder: Decoder::new(head.framing),
                        keep_alive: head.keep_alive,
                        conn: Some(self),
                    };
                    let mut response = Response::new(body);
                    *response.status_mut() = head.status;
                    *response.version_mut() = Version::HTTP_11;
                    *response.headers_mut() = head.headers;
                    return Ok(response);
                }
                Ok(Parsed::Informational(len)) => {
                    let _ = self.buf.split_to(len);
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(HeadError::Invalid(e)),
            }
            match std::future::poll_fn(|cx| self.poll_read_more(cx)).await {
                Ok(0) if !received => return Err(HeadError::ClosedEmpty),
                Ok(0) => return Err(HeadError::Closed(WireError::Incomplete.to_string())),
                Ok(_) => received = true,
                Err(e) => return Err(HeadError::Closed(e.to_string())),
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at the end of the connection.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_read_copied(&self.io, &mut self.buf, cx)
    }
}

/// Reads what `io` has into `buf` through the per-thread read space (see [`READ_SPACE`]):
/// `buf` grows by exactly what was read, and nothing is allocated when the socket turns out to
/// have nothing (a readiness that was stale). `Ok(0)` at the end of the peer's input. The
/// client side reads heads, and watches a client mid-answer, through this too.
pub fn poll_read_copied(
    io: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
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
        loop {
            std::task::ready!(io.poll_read_ready(cx))?;
            match read_draining(io, |io| Ok((io.try_read(space)?, space.len()))) {
                Ok(n) => {
                    buf.extend_from_slice(&space[..n]);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    })
}

/// One read by `read`, which fills less than the space it was given only when the socket had
/// no more. Such a short read clears tokio's record that the socket is readable (as tokio's own
/// `poll_read` does), so the next wait for bytes goes to epoll instead of first making a read
/// that finds nothing: measured, that empty read was one more system call per request on each
/// side.
pub fn read_draining(
    io: &TcpStream,
    read: impl FnOnce(&TcpStream) -> io::Result<(usize, usize)>,
) -> io::Result<usize> {
    let mut got = 0;
    let outcome = io.try_io(Interest::READABLE, || {
        let (n, space) = read(io)?;
        got = n;
        if n > 0 && n < space {
            // Not a failure: "would block" is how `try_io` is told to clear the readiness.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match outcome {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        Err(e) => Err(e),
        Ok(()) => Ok(got),
    }
}

/// A response body read from its connection.
#[derive(Debug)]
pub struct Reading {
    /// Until the body ends (or fails).
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    keep_alive: bool,
}

impl Reading {
    /// The connection, once the body ended cleanly, if it can carry another request: the
    /// engine did not ask to close it and sent nothing beyond the body.
    pub fn reusable(&mut self) -> Option<Box<Conn>> {
        let reusable = self.decoder.is_done()
            && self.keep_alive
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if reusable {
            self.conn.take()
        } else {
            None
        }
    }

    /// The next frame of the body; `None` at its end. The connection is closed (dropped) on an
    /// error, and after a body delimited by the close.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => return self.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) => match self.decoder.at_eof() {
                    // Delimited by the close: over, and the connection with it.
                    Ok(_) => {
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return self.fail(io::Error::new(io::ErrorKind::UnexpectedEof, e)),
                },
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Nothing more will come: the body ended, or failed.
    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done() || self.conn.is_none()
    }

    /// Exact while the head gave a length (and at the end).
    pub fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

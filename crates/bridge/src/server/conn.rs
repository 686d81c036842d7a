//! One client connection: its requests read, handed to the handler and answered, in order.
//!
//! While an answer is prepared and sent, the connection watches its client: input that ends
//! (or a socket that fails) abandons the answer, which cancels the engine request, unless
//! `half_close` says a client may close its side and still wait. Bytes a client sends meanwhile
//! (a pipelined request) are kept for the next round, up to [`MAX_PIPELINED`].

use std::convert::Infallible;
use std::future::{poll_fn, Future};

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::{ClientBody, Shared};
use super::head::{self, BodyLength, Framing, Head};
use super::write::{Out, Piece};
use super::Settings;
use crate::body::BoxError;
use crate::upstream::conn::poll_read_copied;

/// Bytes of a next request kept while an answer is sent; past this the client is not read
/// until the answer is over.
const MAX_PIPELINED: usize = 64 << 10;
/// A connection closed with an unread request body first reads and discards this much of it,
/// for this long, so that its answer is not lost to a reset (nginx's lingering close).
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Serves requests on `io` until the client leaves, a stop is requested (`stop` turns true),
/// or an answer cannot be followed by another.
pub(super) async fn serve<F, Fut, B>(
    io: TcpStream,
    handler: F,
    settings: Settings,
    stop: watch::Receiver<bool>,
) where
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let shared = Shared::new(io);
    let mut conn = Conn {
        shared,
        buf: BytesMut::new(),
        settings,
        stop,
    };
    let mut first = true;
    loop {
        // Scoped, so that neither the head nor the read's result is kept in the connection's
        // future while the answer is on its way (they were ~460 bytes of every open stream).
        let (request, method, version, wants_more, mut reading) = {
            let head = match conn.read_head(first).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(e) => return conn.refuse(e).await,
            };
            let (method, version, wants_more) =
                (head.method.clone(), head.version, head.keep_alive);
            let (request, reading) = conn.request(head);
            (request, method, version, wants_more, reading)
        };
        first = false;
        let mut peer = Peer::new(!reading);
        // The response is moved into the answer's future within this block, so the
        // connection's own future does not keep a copy of it.
        let answer = {
            let response = {
                let handled = {
                    let mut handling = pin!(handler(request));
                    poll_fn(|cx| {
                        if let Poll::Ready(Ok(response)) = handling.as_mut().poll(cx) {
                            return Poll::Ready(Some(response));
                        }
                        if reading {
                            if let Some(back) = conn.shared.take_back() {
                                conn.buf = back;
                                reading = false;
                                peer.watching = true;
                            }
                        }
                        match conn.poll_gone(&mut peer, cx) {
                            true => Poll::Ready(None),
                            false => Poll::Pending,
                        }
                    })
                    .await
                };
                match handled {
                    Some(response) => response,
                    // Gone: the answer (and with it the engine request) is abandoned.
                    None => return,
                }
            };
            if reading {
                if let Some(back) = conn.shared.take_back() {
                    conn.buf = back;
                    reading = false;
                }
            }
            let keep_alive = wants_more && !reading && !peer.half_closed && !*conn.stop.borrow();
            conn.respond(response, &method, version, keep_alive, &mut peer)
        };
        let reusable = answer.await;
        if !reusable {
            if reading {
                conn.linger().await;
            }
            return;
        }
        if conn.buf.is_empty() {
            // An idle connection holds no buffer.
            conn.buf = BytesMut::new();
        }
    }
}

struct Conn {
    shared: Arc<Shared>,
    buf: BytesMut,
    settings: Settings,
    stop: watch::Receiver<bool>,
}

/// What the connection knows of its client while an answer is on its way.
struct Peer {
    /// Reading the client now: the request body is over (or whole), so what comes is its
    /// next request, or the end of its input.
    watching: bool,
    /// The client closed its side (with `half_close`; otherwise it counts as gone).
    half_closed: bool,
}

impl Peer {
    fn new(watching: bool) -> Self {
        Peer {
            watching,
            half_closed: false,
        }
    }
}

/// One step of sending an answer's body.
enum Step {
    Data(Bytes),
    /// Nothing more is ready: write what is gathered.
    Flush,
    End,
    Failed,
    /// The client went away.
    Gone,
}

impl Conn {
    /// Reads until a whole request head. `Ok(None)` when the connection just closes: the
    /// client ended it or sent no more, its head took longer than the header timeout (counted
    /// from the connection's start for its first request, from a head's first byte after
    /// that), or a stop was requested while it was idle.
    async fn read_head(&mut self, first: bool) -> Result<Option<Head>, crate::error::ApiError> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = head::parse_request(&mut self.buf)? {
                    return Ok(Some(head));
                }
            }
            if deadline.is_none() && (first || !self.buf.is_empty()) {
                deadline = Some(Instant::now() + self.settings.header_read_timeout);
            }
            let idle = self.buf.is_empty();
            if idle && *self.stop.borrow() {
                return Ok(None);
            }
            let (shared, buf, stop) = (&self.shared, &mut self.buf, &mut self.stop);
            let read = poll_fn(|cx| poll_read_copied(&shared.io, buf, cx));
            let read = match deadline {
                // Idle between requests: no timer (a stop ends the wait).
                None => tokio::select! {
                    read = read => read,
                    _ = stop.changed() => return Ok(None),
                },
                Some(at) => tokio::select! {
                    read = read => read,
                    () = tokio::time::sleep_until(at) => return Ok(None),
                    _ = stop.changed(), if idle => return Ok(None),
                },
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Ok(None);
            }
        }
    }

    /// Answers a head that could not be read as a request, then closes.
    async fn refuse(mut self, error: crate::error::ApiError) {
        let refusal = crate::dispatch::refusal(error);
        let mut peer = Peer::new(false);
        self.respond(refusal, &Method::GET, Version::HTTP_11, false, &mut peer)
            .await;
        self.linger().await;
    }

    /// The request for `head`, and whether its body still reads from the socket.
    fn request(&mut self, head: Head) -> (Request<ClientBody>, bool) {
        let (body, reading) = match head.body {
            BodyLength::Length(n) if self.buf.len() as u64 >= n => (
                ClientBody::whole(self.buf.split_to(n as usize).freeze()),
                false,
            ),
            length => {
                let buf = std::mem::take(&mut self.buf);
                let body =
                    ClientBody::reading(self.shared.clone(), buf, length, head.expect_continue);
                (body, true)
            }
        };
        if self.buf.is_empty() {
            // Not even the spare room of the block the head and body share stays with the
            // connection while the answer streams.
            self.buf = BytesMut::new();
        }
        (head.into_request(body), reading)
    }

    /// Whether the client went away; reads what it sends meanwhile into the buffer.
    fn poll_gone(&mut self, peer: &mut Peer, cx: &mut Context<'_>) -> bool {
        while peer.watching && self.buf.len() < MAX_PIPELINED {
            match poll_read_copied(&self.shared.io, &mut self.buf, cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) if self.settings.half_close => {
                    peer.watching = false;
                    peer.half_closed = true;
                }
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
            }
        }
        false
    }

    /// Sends `response`; whether the connection can carry another request after it. The head
    /// is written here, before the future, which so holds only what sending the body needs
    /// (an `async fn` would keep the whole response, head included, for the answer's life).
    fn respond<'a, B>(
        &'a mut self,
        response: Response<B>,
        method: &Method,
        version: Version,
        keep_alive: bool,
        peer: &'a mut Peer,
    ) -> impl Future<Output = bool> + 'a
    where
        B: Body<Data = Bytes> + 'a,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        let exact = body.size_hint().exact();
        let framing = head::framing(method, version, parts.status, &parts.headers, exact);
        let keep_alive = keep_alive && framing != Framing::UntilClose;
        let mut out = Out::default();
        head::encode_response(
            &mut out.own,
            parts.status,
            &parts.headers,
            framing,
            !keep_alive,
        );
        out.pieces.push(Piece::Own(0, out.own.len()));
        drop(parts);
        self.send_body(body, out, framing, keep_alive, peer)
    }

    /// Sends the body after the head gathered in `out`.
    async fn send_body<B>(
        &mut self,
        body: B,
        mut out: Out,
        framing: Framing,
        keep_alive: bool,
        peer: &mut Peer,
    ) -> bool
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        if framing == Framing::Empty {
            return out.flush(&self.shared.io).await.is_ok() && keep_alive;
        }
        let mut body = pin!(body);
        loop {
            let step = poll_fn(|cx| {
                if self.poll_gone(peer, cx) {
                    return Poll::Ready(Step::Gone);
                }
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Poll::Ready(Step::Data(data)),
                        // Trailers are not sent.
                        Err(_) => Poll::Ready(Step::Flush),
                    },
                    Poll::Ready(Some(Err(_))) => Poll::Ready(Step::Failed),
                    Poll::Ready(None) => Poll::Ready(Step::End),
                    Poll::Pending if out.pieces.is_empty() => Poll::Pending,
                    Poll::Pending => Poll::Ready(Step::Flush),
                }
            })
            .await;
            match step {
                Step::Data(data) if data.is_empty() => {}
                Step::Data(mut data) => {
                    match framing {
                        Framing::Length(_) => {
                            // More than declared: what fits is sent, and the connection ends.
                            if data.len() as u64 > left {
                                data.truncate(left as usize);
                                out.data(data);
                                let _ = out.flush(&self.shared.io).await;
                                return false;
                            }
                            left -= data.len() as u64;
                            out.data(data);
                        }
                        Framing::Chunked => out.chunk(data),
                        _ => out.data(data),
                    }
                    if out.full() && out.flush(&self.shared.io).await.is_err() {
                        return false;
                    }
                }
                Step::Flush => {
                    if out.flush(&self.shared.io).await.is_err() {
                        return false;
                    }
                }
                Step::End => {
                    if framing == Framing::Chunked {
                        out.pieces.push(Piece::Static(b"0\r\n\r\n"));
                    }
                    // A body shorter than its declared length leaves the client waiting for
                    // the rest: only the close tells it.
                    return out.flush(&self.shared.io).await.is_ok() && keep_alive && left == 0;
                }
                // A body that broke, or a client gone: what was gathered is sent, then the
                // connection closes (a chunked body without its last chunk, or a short one,
                // tells the client the answer broke).
                Step::Failed => {
                    let _ = out.flush(&self.shared.io).await;
                    return false;
                }
                Step::Gone => return false,
            }
        }
    }

    /// Closes after an answer that left the request body unread: the client may still be
    /// sending it, and closing with unread bytes resets the connection, which can destroy the
    /// answer before the client reads it. Ends the sending side, then reads and discards, for
    /// a bounded time and amount.
    async fn linger(self) {
        let Ok(shared) = Arc::try_unwrap(self.shared) else {
            return;
        };
        let mut io = shared.io;
        if io.shutdown().await.is_err() {
            return;
        }
        let discard = async {
            // On the heap: an array here would be 4 KiB of every connection's future.
            let mut sink = vec![0u8; 4096];
            let mut read = 0;
            while read < LINGER_BYTES {
                match io.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    }
}

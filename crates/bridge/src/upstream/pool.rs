//! Keep-alive connections to replicas, one pool per worker thread.
//!
//! Each worker owns its pool, so checking a connection out is an uncontended lock and a `Vec`
//! pop. A connection goes back to the pool only when its response body ended cleanly; a body
//! dropped early (the client went away) drops the connection, which is how the engine learns to
//! stop generating. Idle connections older than [`POOL_IDLE`] are never reused: vLLM (uvicorn)
//! closes keep-alive connections after 5 s, and a request written onto a connection the engine
//! is closing is the classic source of spurious 502s. Should it happen anyway, a request that
//! could not be written on a pooled connection is tried again on another, and at last a fresh one.
//! The connections and their HTTP/1.1 are Bridge's own ([`super::conn`], [`super::wire`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::conn::{Conn, HeadError, Reading};
use super::request::EngineRequest;
use super::wire::encode_head;

/// Idle pooled connections are not reused after this long (vLLM/uvicorn close theirs at 5 s).
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// How often idle connections past [`POOL_IDLE`] are closed.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Idle connections kept per replica and worker; more are closed when they come back.
pub const POOL_MAX_IDLE_PER_REPLICA: usize = 256;
/// A kept-alive connection closed without any answer this soon after the request was written
/// counts as the engine closing an idle connection (a race with keep-alive expiry or a shutdown),
/// not as a crash while working on the request: such a request may go to another replica. The
/// residual risk, an engine that reads a request and dies within this window, is bounded by the
/// retry budget.
const STALE_CLOSE_WINDOW: Duration = Duration::from_millis(250);
/// Stale pooled connections tried (each found closed before the request was written) before a
/// fresh one is opened.
const MAX_STALE_TRIES: usize = 4;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened.
    Connect(String),
    /// The connection failed before the request was written: nothing reached the engine.
    NotSent(String),
    /// The connection failed after the request was (maybe) written, before a response arrived.
    Closed(String),
    /// The engine answered with bytes that are not a response head Bridge reads.
    Invalid(String),
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    /// By the replica's `host:port`.
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>>,
}

/// On a response that came over a connection opened for it: how long connecting took.
#[derive(Debug, Clone, Copy)]
pub struct Connected(pub Duration);

/// One worker's connections to every replica.
#[derive(Clone, Default)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// Sends `request` (absolute URI) over a pooled connection, or a new one opened within
    /// `connect_timeout`. `now` is the caller's reading of the clock as it sends: the idle
    /// connections' ages and the stale window are measured from it (a reading is a clock call,
    /// and the request path had seven).
    ///
    /// Not an `async fn`: the head is written here, so the future holds its bytes and the body
    /// instead of the whole request (and, as an `async fn` would, a second copy of it).
    pub fn send(
        &self,
        request: EngineRequest,
        connect_timeout: Duration,
        now: Instant,
    ) -> impl Future<Output = Result<Response<PooledBody>, SendError>> + '_ {
        let head = match request.uri.authority() {
            Some(authority) => {
                // HTTP/1.1 to an origin server: origin-form target and the authority as `host`.
                let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut head = Vec::with_capacity(256 + request.headers.as_bytes().len());
                encode_head(
                    &mut head,
                    &request.method,
                    target,
                    authority.as_str(),
                    request.headers.as_bytes(),
                    request.body.len(),
                );
                Ok((authority.clone(), head))
            }
            None => Err(SendError::Connect("no host".into())),
        };
        let EngineRequest { method, body, .. } = request;
        async move {
            let (authority, head) = head?;
            for attempt in 0..=MAX_STALE_TRIES {
                let (mut conn, reused, opened) = match self.checkout(&authority, now) {
                    Some(conn) if attempt < MAX_STALE_TRIES => (conn, true, None),
                    _ => {
                        let start = Instant::now();
                        let conn = connect(&authority, connect_timeout).await?;
                        (conn, false, Some(Connected(start.elapsed())))
                    }
                };
                if let Err(e) = conn.write_request(&head, &body).await {
                    if reused {
                        // The pooled connection had gone stale; the engine cannot have acted on a
                        // request it did not wholly receive. Another connection takes it.
                        continue;
                    }
                    return Err(SendError::NotSent(e.to_string()));
                }
                match conn.read_response(&method).await {
                    Ok(response) => {
                        let mut response = response.map(|reading| PooledBody {
                            reading,
                            give_back: Some(GiveBack {
                                pool: Arc::downgrade(&self.inner),
                                authority: authority.clone(),
                            }),
                        });
                        // A body with nothing to read (204, HEAD) ends here.
                        response.body_mut().give_back_if_done();
                        if let Some(opened) = opened {
                            // Only new connections pay for the extension map (traces read it).
                            response.extensions_mut().insert(opened);
                        }
                        return Ok(response);
                    }
                    // A kept-alive connection the engine closed as the request went out: the close
                    // raced the request, no answer began, and it came too soon for the engine to
                    // have worked on it. Treated like an unwritten request.
                    Err(HeadError::ClosedEmpty) if reused && now.elapsed() < STALE_CLOSE_WINDOW => {
                        return Err(SendError::NotSent(
                            "a kept-alive connection was closed as the request was sent".into(),
                        ))
                    }
                    Err(HeadError::ClosedEmpty) => {
                        return Err(SendError::Closed(
                            "the connection was closed before any response".into(),
                        ))
                    }
                    Err(HeadError::Closed(e)) => return Err(SendError::Closed(e)),
                    Err(HeadError::Invalid(e)) => return Err(SendError::Invalid(e.to_string())),
                }
            }
            Err(SendError::NotSent("no usable connection".into()))
        }
    }

    /// Closes idle connections that reached [`POOL_IDLE`], so none outlives it even when no
    /// request comes to check it out (an engine with a long keep-alive timeout would otherwise
    /// hold them open), and those the engine closed meanwhile (nothing reads an idle one).
    pub fn sweep(&self) {
        let Ok(mut map) = self.inner.idle.lock() else {
            return;
        };
        map.retain(|_, idle| {
            idle.retain(|c| c.since.elapsed() < POOL_IDLE && c.conn.idle_ok());
            !idle.is_empty()
        });
    }

    /// Sweeps every [`SWEEP_EVERY`] until the future is dropped.
    pub async fn sweep_forever(self) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// The most recently used idle connection that is still usable.
    fn checkout(&self, authority: &Authority, now: Instant) -> Option<Box<Conn>> {
        let mut map = self.inner.idle.lock().ok()?;
        let idle = map.get_mut(authority.as_str())?;
        while let Some(c) = idle.pop() {
            if now.saturating_duration_since(c.since) < POOL_IDLE && c.conn.idle_ok() {
                return Some(c.conn);
            }
        }
        None
    }
}

async fn connect(authority: &Authority, timeout: Duration) -> Result<Box<Conn>, SendError> {
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => Ok(Conn::new(stream)),
        Ok(Err(e)) => Err(SendError::Connect(e.to_string())),
        Err(_) => Err(SendError::Connect(format!(
            "no connection within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Returns a connection to its pool once its response is complete.
#[derive(Debug)]
struct GiveBack {
    pool: Weak<Inner>,
    authority: Authority,
}

impl GiveBack {
    /// Puts `conn` back among its replica's idle connections (unless that list is full).
    fn give_back(self, conn: Box<Conn>) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let Ok(mut map) = pool.idle.lock() else {
            return;
        };
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        match map.get_mut(self.authority.as_str()) {
            Some(list) if list.len() < POOL_MAX_IDLE_PER_REPLICA => list.push(idle),
            Some(_) => {}
            None => {
                map.insert(self.authority.as_str().into(), vec![idle]);
            }
        }
    }
}

/// An engine's response body; finishing it returns the connection to the pool, dropping it
/// early (or [`PooledBody::discard`]) closes the connection, which is how an engine learns
/// that the client left.
#[derive(Debug)]
pub struct PooledBody {
    reading: Reading,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    /// The connection must not be reused (the body will not be read to its end cleanly): it
    /// closes when the body is dropped.
    pub fn discard(&mut self) {
        self.give_back = None;
    }

    fn give_back_if_done(&mut self) {
        if !self.reading.is_end_stream() {
            return;
        }
        if let (Some(giver), Some(conn)) = (self.give_back.take(), self.reading.reusable()) {
            giver.give_back(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(self.reading.poll_frame(cx));
        // Servers stop polling a body of known length once it is all written, so the end is
        // acted on with the last data, not only on `None`.
        self.give_back_if_done();
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.reading.size_hint()
    }
}

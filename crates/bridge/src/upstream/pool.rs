//! Keep-alive connections to replicas, one pool per worker thread.
//!
//! Each worker owns its pool, so checking a connection out is an uncontended lock and a `Vec`
//! pop. A connection goes back to the pool only when its response body ended cleanly; a body
//! dropped early (the client went away) drops the connection, which is how the engine learns to
//! stop generating. Idle connections older than [`POOL_IDLE`] are never reused: vLLM (uvicorn)
//! closes keep-alive connections after 5 s, and a request written onto a connection the engine
//! is closing is the classic source of spurious 502s. Should it happen anyway, hyper hands back a
//! request it could not write, and only such a request is retried, on a fresh connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ReqBody;

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
}

struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
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
    /// `connect_timeout`.
    pub async fn send(
        &self,
        mut request: Request<ReqBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        let uri = request.uri().clone();
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| SendError::Connect("no host".into()))?;
        // HTTP/1.1 to an origin server: origin-form target and an explicit Host.
        *request.uri_mut() = uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
        for attempt in 0..=MAX_STALE_TRIES {
            let (mut sender, reused, opened) = match self.checkout(&authority).await {
                Some(sender) if attempt < MAX_STALE_TRIES => (sender, true, None),
                _ => {
                    let start = Instant::now();
                    let sender = connect(&authority, connect_timeout).await?;
                    (sender, false, Some(Connected(start.elapsed())))
                }
            };
            let sent_at = Instant::now();
            match sender.try_send_request(request).await {
                Ok(mut response) => {
                    if let Some(opened) = opened {
                        // Only new connections pay for the extension map (traces read it).
                        response.extensions_mut().insert(opened);
                    }
                    let giver = GiveBack {
                        pool: Arc::downgrade(&self.inner),
                        authority,
                        sender,
                    };
                    return Ok(response.map(|body| PooledBody {
                        inner: body,
                        give_back: Some(giver),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the pooled connection had gone stale. Safe to retry.
                    Some(unsent) if reused => request = unsent,
                    Some(_) => return Err(SendError::NotSent(innermost(e.error()))),
                    // A kept-alive connection the engine closed as the request went out: the
                    // close raced the request, no answer began, and it came too soon for the
                    // engine to have worked on it. Treated like an unwritten request.
                    None if reused
                        && e.error().is_incomplete_message()
                        && sent_at.elapsed() < STALE_CLOSE_WINDOW =>
                    {
                        return Err(SendError::NotSent(format!(
                            "a kept-alive connection was closed as the request was sent: {}",
                            innermost(e.error())
                        )))
                    }
                    None => return Err(SendError::Closed(innermost(e.error()))),
                },
            }
        }
        Err(SendError::NotSent("no usable connection".into()))
    }

    /// Closes idle connections that reached [`POOL_IDLE`], so none outlives it even when no
    /// request comes to check it out (an engine with a long keep-alive timeout would otherwise
    /// hold them open). Idle lists are in return order, so expired ones are at the front.
    pub fn sweep(&self) {
        let Ok(mut map) = self.inner.idle.lock() else {
            return;
        };
        map.retain(|_, idle| {
            let expired = idle
                .iter()
                .take_while(|c| c.since.elapsed() >= POOL_IDLE)
                .count();
            idle.drain(..expired);
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
    async fn checkout(&self, authority: &Authority) -> Option<SendRequest<ReqBody>> {
        loop {
            let idle = {
                let mut map = self.inner.idle.lock().ok()?;
                map.get_mut(authority)?.pop()?
            };
            if idle.since.elapsed() >= POOL_IDLE || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once unless the connection task is still finishing the last response.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }
}

async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<ReqBody>, SendError> {
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
        Err(_) => {
            return Err(SendError::Connect(format!(
                "no connection within {} ms",
                timeout.as_millis()
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(innermost(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The innermost cause, which is the useful part of hyper's nested errors.
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Returns a connection to its pool once its response is complete.
struct GiveBack {
    pool: Weak<Inner>,
    authority: Authority,
    sender: SendRequest<ReqBody>,
}

impl GiveBack {
    fn give_back(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let Ok(mut map) = pool.idle.lock() else {
            return;
        };
        let idle = map.entry(self.authority).or_default();
        if idle.len() < POOL_MAX_IDLE_PER_REPLICA {
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

/// An engine's response body; finishing it returns the connection to the pool, dropping it
/// early (or [`PooledBody::discard`]) closes the connection.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    /// The connection must not be reused (the body will not be read to its end cleanly): it
    /// closes when the body is dropped.
    pub fn discard(&mut self) {
        self.give_back = None;
    }

    fn give_back(&mut self) {
        if let Some(giver) = self.give_back.take() {
            giver.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            // Servers stop polling a body of known length once it is all written, so the end
            // is noticed on the last frame, not only on `None`.
            None => self.give_back(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.give_back(),
            Some(Err(_)) => self.discard(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

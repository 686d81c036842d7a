//! Accepting connections: one HTTP/1.1 connection task per client, `TCP_NODELAY` on, and a
//! graceful stop that lets requests in flight finish, for at most a drain timeout.
//!
//! Clients are served by Bridge's own HTTP/1.1 ([`serve_with`]: [`conn`], [`head`], [`body`], [`write`]);
//! the admin API and the engine simulator by hyper's ([`serve`]), where speed does not matter.
//! Why its own: hyper's server kept two 8 KiB buffers per connection for the connection's life
//! (16 of the ~20 KB each open stream cost), and its dispatch, its header map and its
//! per-event chunk formatting were most of what Bridge did per request and per stream event.
//! A request here is parsed with `httparse` (the parser hyper uses), its values sharing the
//! read bytes; an answer is one vectored write per batch of ready body frames, never copied.

pub mod body;
mod conn;
pub mod head;
mod write;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::body::BoxError;
use crate::config::{DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_HEADER_READ_TIMEOUT_MS};
use body::ClientBody;

/// How long a client may take to send its request headers, by default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS);
/// How long in-flight requests may run after a stop was requested, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS);

/// Where a server's connections come from.
pub enum Connections {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted elsewhere and handed to this worker (see [`crate::app`]).
    Handoff(mpsc::UnboundedReceiver<std::net::TcpStream>),
}

impl From<TcpListener> for Connections {
    fn from(listener: TcpListener) -> Self {
        Connections::Listener(listener)
    }
}

impl Connections {
    /// The next connection; `None` when no more can come.
    async fn next(&mut self) -> Option<std::io::Result<TcpStream>> {
        match self {
            Connections::Listener(listener) => Some(listener.accept().await.map(|(s, _)| s)),
            Connections::Handoff(rx) => rx.recv().await.map(TcpStream::from_std),
        }
    }

    /// The next connection, or `None` once `shutdown` resolves or no more can come. A failed
    /// accept (out of file descriptors or similar) backs off instead of spinning.
    async fn accept_until(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<TcpStream> {
        loop {
            tokio::select! {
                next = self.next() => match next? {
                    Ok(stream) => return Some(stream),
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = shutdown.as_mut() => return None,
            }
        }
    }
}

/// Accepts on `listener` and hands connections to `workers` in turn, so each worker gets an
/// equal share even when a burst of connections arrives at once (a shared listening socket
/// lets whichever thread wakes first take them all). One cross-thread hop per connection,
/// none per request.
pub async fn distribute(
    listener: TcpListener,
    workers: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let _ = workers[next % workers.len()].send(stream);
        next = next.wrapping_add(1);
    }
}

/// How a server treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long requests in flight may run after a stop was requested.
    pub drain_timeout: Duration,
    /// Connections whose request headers take longer to arrive are closed (slow-loris).
    pub header_read_timeout: Duration,
    /// Answer a client that half-closed its side after sending its request, instead of taking
    /// the end of its input as a disconnect (which cancels the engine request at once).
    pub half_close: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            half_close: false,
        }
    }
}

/// After the drain timeout, time for answers still open to end properly once told to
/// ([`serve_with`]'s `cut`), before their connections are closed.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Serves `handler` on `connections` with Bridge's own HTTP/1.1 (see [`conn`]) until
/// `shutdown` resolves, then drains: idle connections close at once, busy ones after their
/// answer. When the drain timeout passes with answers still open, `cut` is called (it tells
/// them to end, each in its own dialect) and they get `CUT_GRACE` (1 s) to do so.
pub async fn serve_with<F, Fut, B>(
    connections: impl Into<Connections>,
    shutdown: impl Future<Output = ()>,
    settings: Settings,
    cut: impl FnOnce(),
    handler: F,
) where
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (stop, stopping) = watch::channel(false);
    let mut connections = connections.into();
    tokio::pin!(shutdown);
    loop {
        let Some(stream) = connections.accept_until(&mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(conn::serve(
            stream,
            handler.clone(),
            settings,
            stopping.clone(),
        ));
    }
    drop((connections, stopping));
    let _ = stop.send(true);
    // Every connection holds a receiver: the channel closes when the last one has ended.
    let drained = stop.closed();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => info!("all connections drained"),
        () = tokio::time::sleep(settings.drain_timeout) => {
            warn!("drain timeout: ending the answers still open, then closing their connections");
            cut();
            if tokio::time::timeout(CUT_GRACE, drained).await.is_err() {
                warn!("connections still open after the drain timeout were closed");
            }
        }
    }
}

/// Serves `handler` on `connections` with hyper's HTTP/1.1 until `shutdown` resolves, then
/// drains for at most `drain_timeout` (the admin API, the engine simulator, tests' engines).
pub async fn serve<F, Fut, B>(
    connections: impl Into<Connections>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut connections = connections.into();
    tokio::pin!(shutdown);
    loop {
        let Some(stream) = connections.accept_until(&mut shutdown).await else {
            break;
        };
        let peer = stream.peer_addr().ok();
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let connection = builder.serve_connection(TokioIo::new(stream), service_fn(handler));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(?peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(connections);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout were closed");
    }
}

//! The way to the engines: a request sent over the worker's pool within its time limits, with
//! the engine's headers made from the client's.
//!
//! Connections come from the worker's [`Pool`] (keep-alive, `TCP_NODELAY`, idle ones retired
//! before the engine's keep-alive timeout, stale ones retried only when the request was never
//! written). The client's headers are forwarded except those that describe the client's own
//! connection or credentials; the engine gets the deployment's key instead, if it has one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::pool::{Pool, PooledBody, SendError};
use super::request::{EngineRequest, HeaderLines};
use crate::error::ApiError;
use crate::error::UpstreamFailure;
use crate::headers::REQUEST_ID;

/// A timeout this long never ends.
const NEVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Request headers that must not be forwarded: connection-scoped (hop-by-hop), recomputed by
/// Bridge, or the client's credentials.
const STRIP_REQUEST: [HeaderName; 12] = [
    header::CONNECTION,
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::ACCEPT_ENCODING,
    header::EXPECT,
    header::COOKIE,
];

/// More request headers that carry connection state under other names, or that claim things
/// about the client no engine should trust (`forwarded`, `x-real-ip`, and every
/// `x-forwarded-*`, which any client can forge; Bridge adds none: engines do not need the
/// caller's address).
const STRIP_REQUEST_NAMED: [&str; 4] = ["keep-alive", "proxy-connection", "forwarded", "x-real-ip"];

/// Credentials other vendors' clients and gateways send under their own names (besides every
/// header whose name ends in `api-key`: `api-key`, `x-api-key`, `x-goog-api-key`, ...). The
/// client's credentials are for Bridge; an engine gets the deployment's key or none.
pub const CREDENTIAL_HEADERS: [&str; 8] = [
    "x-amz-security-token",
    "ocp-apim-subscription-key",
    "x-functions-key",
    "x-auth-token",
    "cf-access-client-id",
    "cf-access-client-secret",
    "private-token",
    "helicone-auth",
];

/// Whether a request header carries a credential (see [`CREDENTIAL_HEADERS`]).
fn is_credential(name: &str) -> bool {
    name.ends_with("api-key") || CREDENTIAL_HEADERS.contains(&name)
}

/// A worker's way to its engines.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    pool: Pool,
    /// Set when the worker's drain timeout passed: answers still open end now.
    cut: Arc<Cut>,
}

/// The signal that a stopping worker's drain timeout passed: every answer still being relayed
/// ends, properly, in its client's dialect, instead of being cut mid-chunk.
#[derive(Debug, Default)]
pub struct Cut {
    given: AtomicBool,
    notify: Arc<Notify>,
}

impl Cut {
    /// Whether the signal was given.
    pub fn is_given(&self) -> bool {
        self.given.load(Ordering::Acquire)
    }

    /// A future that resolves when the signal is given (or was already; [`OwnedNotified::enable`]
    /// it, then check [`Cut::is_given`], to miss nothing).
    pub fn wait(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }

    fn give(&self) {
        self.given.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl Upstream {
    /// A new, empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker's drain-timeout signal, for the answers it relays.
    pub fn cut_signal(&self) -> &Arc<Cut> {
        &self.cut
    }

    /// Tells every answer still being relayed to end now.
    pub fn cut(&self) {
        self.cut.give();
    }

    /// Closes idle connections before engines' keep-alive timeouts, until dropped.
    pub async fn sweep_forever(self) {
        self.pool.sweep_forever().await;
    }

    /// Sends `request`, connecting within `connect` if no pooled connection is ready, and
    /// waits up to `first_byte` (connecting included) for the response headers; `now` is the
    /// caller's reading of the clock as it sends (see [`Pool::send`]).
    ///
    /// Not an `async fn`, which would keep a second copy of the request beside the pool's
    /// future: every request's future is that much larger.
    pub fn send(
        &self,
        request: EngineRequest,
        connect: Duration,
        first_byte: Duration,
        now: Instant,
    ) -> impl Future<Output = Result<Response<PooledBody>, ApiError>> + '_ {
        // Thirty years stands for "never", as in tokio's own `timeout` (no overflow).
        let until = tokio::time::Instant::from_std(now) + first_byte.min(NEVER);
        let sending = tokio::time::timeout_at(until, self.pool.send(request, connect, now));
        sending.map(move |result| match result {
            // Messages never name the replica's address: clients see them (the caller logs it).
            Ok(Ok(response)) => Ok(response),
            Ok(Err(SendError::Connect(e))) => Err(ApiError::bad_gateway(format!(
                "could not connect to the engine: {e}"
            ))
            .retry_safe()
            .upstream(UpstreamFailure::Connect)),
            Ok(Err(SendError::NotSent(e))) => Err(ApiError::bad_gateway(format!(
                "the engine closed the connection before the request was sent: {e}"
            ))
            .retry_safe()
            .upstream(UpstreamFailure::Reset)),
            Ok(Err(SendError::Closed(e))) => Err(ApiError::bad_gateway(format!(
                "the engine closed the connection before answering: {e}"
            ))
            .upstream(UpstreamFailure::Reset)),
            // The connection is dropped with the bytes: counted as a broken connection.
            Ok(Err(SendError::Invalid(e))) => {
                Err(ApiError::bad_gateway(e).upstream(UpstreamFailure::Reset))
            }
            Err(_) => Err(ApiError::gateway_timeout(format!(
                "the engine did not answer within {} ms",
                first_byte.as_millis()
            ))
            .upstream(UpstreamFailure::Timeout)),
        })
    }
}

/// The engine's header lines: `forward_only`, the lines the server already wrote (see
/// [`super::request::is_forward_only`]), then the client's other headers in one pass (see
/// [`HeaderLines`] for why not a second map). The `content-length` is the head's own.
pub fn upstream_headers(
    client: &HeaderMap,
    forward_only: HeaderLines,
    request_id: &HeaderValue,
    upstream_auth: Option<&HeaderValue>,
) -> HeaderLines {
    let listed = connection_listed(client);
    // About a line's worth per header, Bridge's four included.
    let room = 64 * (client.len() + 4);
    let mut out = if forward_only.is_empty() {
        HeaderLines::with_capacity(room)
    } else {
        let mut lines = forward_only;
        lines.reserve(room);
        lines
    };
    for (name, value) in client {
        let stripped = STRIP_REQUEST.contains(name)
            || STRIP_REQUEST_NAMED.contains(&name.as_str())
            || is_credential(name.as_str())
            || name == REQUEST_ID
            || name.as_str().starts_with("x-forwarded-")
            || listed.contains(name);
        if !stripped {
            out.push(name, value);
        }
    }
    // Plain bytes from the engine: Bridge inspects streams, and loopback/LAN bandwidth is cheap.
    out.push(
        &header::ACCEPT_ENCODING,
        &HeaderValue::from_static("identity"),
    );
    out.push(&REQUEST_ID, request_id);
    if let Some(auth) = upstream_auth {
        out.push(&header::AUTHORIZATION, auth);
    }
    out
}

/// The headers a message's `Connection` header lists: hop-by-hop too. `close` and
/// `keep-alive`, what clients send (the Python SDK on every request), name no header Bridge
/// would forward, so they are skipped before a name is made of them (`keep-alive` is no
/// standard name: an allocation, and a `Vec` for it, per request).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

//! Stage 4 of a request: send it to a replica.
//!
//! One pooled HTTP/1.1 client serves every replica. Idle pooled connections are closed after
//! [`POOL_IDLE`], below vLLM's 5 s keep-alive, so Bridge never reuses a connection the engine is
//! about to close (the stale-connection resets peers in this field suffer from). The client's
//! headers are forwarded except those that describe the client's own connection or
//! credentials; the engine gets the deployment's key instead, if it has one.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ReqBody;
use crate::error::ApiError;

/// Idle pooled connections are dropped after this long (vLLM/uvicorn close theirs at 5 s).
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per replica.
pub const POOL_MAX_IDLE_PER_REPLICA: usize = 512;
/// Time allowed to open a TCP connection to a replica.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// More request headers that carry credentials or connection state under other names.
const STRIP_REQUEST_NAMED: [&str; 4] = ["keep-alive", "proxy-connection", "api-key", "x-api-key"];

/// The shared upstream client.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, ReqBody>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_REPLICA)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstream { client }
    }

    /// Sends `request` and waits up to `first_byte` for the response headers.
    pub async fn send(
        &self,
        request: Request<ReqBody>,
        first_byte: Duration,
    ) -> Result<Response<Incoming>, ApiError> {
        let uri = request.uri().clone();
        match tokio::time::timeout(first_byte, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(ApiError::bad_gateway(format!(
                "could not connect to the engine at {}",
                authority(&uri)
            ))),
            Ok(Err(e)) => Err(ApiError::bad_gateway(format!(
                "the engine at {} closed the connection before answering: {}",
                authority(&uri),
                source_text(&e)
            ))),
            Err(_) => Err(ApiError::gateway_timeout(format!(
                "the engine at {} did not answer within {} ms",
                authority(&uri),
                first_byte.as_millis()
            ))),
        }
    }
}

fn authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// The innermost cause, which is the useful part of hyper's nested errors.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The engine's headers, built from the client's in one pass: each kept header is hashed once,
/// where removing every unwanted name from the client's map hashed 16 names per request.
pub fn upstream_headers(
    client: &HeaderMap,
    request_id: &HeaderValue,
    upstream_auth: Option<&HeaderValue>,
    content_length: u64,
) -> HeaderMap {
    // Headers the client listed in `Connection` are hop-by-hop too (rare: only then parsed).
    let listed: Vec<HeaderName> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    for (name, value) in client {
        let stripped = STRIP_REQUEST.contains(name)
            || STRIP_REQUEST_NAMED.contains(&name.as_str())
            || name == "x-request-id"
            || listed.contains(name);
        if !stripped {
            out.append(name.clone(), value.clone());
        }
    }
    // Plain bytes from the engine: Bridge inspects streams, and loopback/LAN bandwidth is cheap.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(content_length));
    out.insert("x-request-id", request_id.clone());
    if let Some(auth) = upstream_auth {
        out.insert(header::AUTHORIZATION, auth.clone());
    }
    out
}

/// Builds a request to `uri` with the prepared headers.
pub fn build_request(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: ReqBody,
) -> Request<ReqBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

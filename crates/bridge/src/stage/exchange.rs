//! The exchange: one request's context, filled in and read by the stages as it goes.
//!
//! Stages take the exchange instead of long parameter lists. What must outlive the response
//! head (the [`Record`] of what the request did) is a field of its own, handed to the engine's
//! body when the answer is relayed; the rest ends with the pipeline.

use std::sync::Arc;

use http::{HeaderValue, Method};

use crate::config::registry::{Deployment, Endpoint, Registry};
use crate::fleet::{Fleet, Rates};
use crate::observe::record::Record;
use crate::observe::spans::Trace;
use crate::upstream::request::HeaderLines;

/// One request on its way through the stages.
pub struct Exchange {
    /// The routing table the request started with: it keeps it to the end, so a reload never
    /// changes its route midway.
    pub registry: Arc<Registry>,
    /// `x-request-id`, the client's or a new one; sent to the engine and logged.
    pub request_id: HeaderValue,
    /// The client route; its dialect is [`crate::dialect::of`] it.
    pub endpoint: Endpoint,
    /// The model named by the URL (`/{model_id}/v1/...`, the previous bridge's form).
    pub path_model: Option<String>,
    /// The client's method (`POST` but for a stored response's `GET` and `DELETE`).
    pub method: Method,
    /// The stored response the URL names (`responses/{id}`), to be reached where it was made.
    pub response_id: Option<String>,
    /// The path of an extra route (a deployment's `extra_routes`).
    pub extra_route: Option<String>,
    /// The caller's key label (0: no key).
    pub key: usize,
    /// Who owns what this request makes: its key's digest (zeros without a key).
    pub owner: [u8; 32],
    /// The client's query string, for the routes that forward it.
    pub query: Option<String>,
    /// The client's headers that are only forwarded, already the engine's lines (the rest are
    /// in the client's header map).
    pub forward_only: HeaderLines,
    /// The replica the request must reach (it holds the response the request names), by index.
    pub pinned: Option<usize>,
    /// The prefix affinity key, for a `balance = "prefix"` deployment.
    pub affinity: Option<u64>,
    /// The request's total deadline and parking limit, set when it is first sent: a request
    /// that moves to a newer generation of its deployment keeps them.
    pub clocks: Option<(Option<tokio::time::Instant>, Option<tokio::time::Instant>)>,
    /// Counted toward its deployment's retry budget (at its first attempt).
    pub counted: bool,
    /// The deployment serving the request, once resolved.
    pub deployment: Option<Arc<Deployment>>,
    /// The fleet's limits.
    pub fleet: Arc<Fleet>,
    /// Where the caller's limits stood once admitted: the answer's `x-ratelimit-*` headers.
    pub rates: Option<Rates>,
    /// What the request did, recorded when its answer is over.
    pub record: Record,
}

impl Exchange {
    /// A request that just arrived on `endpoint`.
    pub fn new(
        registry: Arc<Registry>,
        request_id: HeaderValue,
        endpoint: Endpoint,
        path_model: Option<String>,
        fleet: Arc<Fleet>,
        trace: Option<Box<Trace>>,
    ) -> Self {
        let record = Record::new(
            registry.clone(),
            request_id.clone(),
            endpoint.metrics_index(),
            trace,
        );
        Exchange {
            registry,
            request_id,
            endpoint,
            path_model,
            method: Method::POST,
            response_id: None,
            pinned: None,
            affinity: None,
            clocks: None,
            counted: false,
            key: 0,
            owner: [0; 32],
            query: None,
            forward_only: HeaderLines::default(),
            extra_route: None,
            deployment: None,
            fleet,
            rates: None,
            record,
        }
    }
}

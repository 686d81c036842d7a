//! Bridge: one fast, OpenAI-compatible endpoint in front of self-hosted inference engines.
//!
//! # Layout
//!
//! A request passes through these stages, each in its own module:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | accept | [`server`] | HTTP/1.1 connections, `TCP_NODELAY`, graceful drain |
//! | dispatch | [`router`] | method + path → route; health and model list answered here |
//! | authenticate | [`auth`] | `Bearer` / `Api-Key`, constant-time, per-key model allow-list |
//! | route | [`routing`] over [`json`] | `baseten` (or `model = "baseten/..."`) read from the body in one pass |
//! | resolve | [`proxy`] against [`registry`] | model → deployment (production by default) → replica |
//! | send | [`upstream`] | pooled keep-alive client, header hygiene, engine key |
//! | relay | [`relay`] over [`sse`] | body passed through; streams event by event, failures in-band |
//! | errors | [`error`] | the one place that writes the OpenAI error envelope |
//!
//! [`config`] holds the operator's TOML as written; [`registry`] is its validated runtime form.
//! [`sim`] is a simulated engine used by the demo model, the tests and the benchmarks.

pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod json;
pub mod proxy;
pub mod registry;
pub mod relay;
pub mod router;
pub mod routing;
pub mod server;
pub mod sim;
pub mod sse;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::registry::Registry;
use crate::upstream::Upstream;

/// What every request shares: the routing table and the upstream connection pool.
#[derive(Debug)]
pub struct AppState {
    registry: Arc<Registry>,
    upstream: Upstream,
}

impl AppState {
    pub fn new(registry: Registry) -> Self {
        AppState {
            registry: Arc::new(registry),
            upstream: Upstream::new(),
        }
    }

    /// The routing table for one request. A request keeps the table it started with.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

/// Serves Bridge on `listener` until `shutdown` resolves, then drains requests in flight.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    if state.registry.keys.is_empty() {
        tracing::warn!(
            "no [[auth.keys]] configured: Bridge accepts requests from ANY caller; configure keys before exposing it"
        );
    }
    server::serve(listener, shutdown, move |request| {
        router::handle(state.clone(), request)
    })
    .await;
}

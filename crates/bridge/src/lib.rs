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
//! | adapt | [`predict`] | predict-only models: request translated, answers and streams made OpenAI-shaped |
//! | send | [`upstream`] | pooled keep-alive client, header hygiene, engine key |
//! | relay | [`relay`] over [`sse`] | body passed through; streams event by event, failures in-band |
//! | record | [`record`] into [`metrics`] | per-request record: metrics and the request log |
//! | errors | [`error`] | the one place that writes the OpenAI error envelope |
//!
//! [`config`] holds the operator's TOML as written; [`registry`] is its validated runtime form;
//! [`live`] swaps in a new one on reload, and [`admin`] changes it through the config file.
//! [`sim`] is a simulated engine used by the demo model, the tests and the benchmarks.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod health;
pub mod json;
pub mod live;
pub mod metrics;
pub mod pool;
pub mod predict;
pub mod proxy;
pub mod record;
pub mod registry;
pub mod relay;
pub mod router;
pub mod routing;
pub mod server;
pub mod sim;
pub mod sse;
pub mod upstream;
pub mod usage;
pub mod validate;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::live::Live;
use crate::registry::Registry;
use crate::upstream::Upstream;

/// What every request shares: the routing table in force and the upstream connection pool.
#[derive(Debug)]
pub struct AppState {
    live: Arc<Live>,
    upstream: Upstream,
    /// Set once a stop was requested (shared by all workers): `/health` then answers 503.
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// State over a routing table that never changes.
    pub fn new(registry: Registry) -> Self {
        Self::shared(Live::fixed(registry), Arc::default())
    }

    /// State for one worker: the routing table and the draining flag are shared, the upstream
    /// pool is the worker's own.
    pub fn shared(live: Arc<Live>, draining: Arc<AtomicBool>) -> Self {
        AppState {
            live,
            upstream: Upstream::new(),
            draining,
        }
    }

    /// The routing table in force and how it changes.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The routing table for one request. A request keeps the table it started with.
    pub fn registry(&self) -> Arc<Registry> {
        self.live.load()
    }
}

/// Serves Bridge on `listener` until `shutdown` resolves, then drains requests in flight.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    let registry = state.registry();
    warn_if_open(&registry);
    let background = tokio::spawn(background(state.live.clone()));
    let stop = draining(shutdown, state.draining.clone(), registry.drain_delay);
    serve_worker(listener, state.clone(), stop).await;
    background.abort();
}

/// Health checks of the table in force, and the config file watch. Never completes.
async fn background(live: Arc<Live>) {
    let watch = async {
        if live.path().is_some() {
            live.clone().watch_file().await;
        }
        std::future::pending::<()>().await
    };
    tokio::join!(health::check_live(live.clone()), watch);
}

/// Resolves `drain_delay` after `stop`: in between, `/health` already answers 503 (load
/// balancers take the instance out of rotation) while new connections are still served.
async fn draining(stop: impl Future<Output = ()>, flag: Arc<AtomicBool>, drain_delay: Duration) {
    stop.await;
    flag.store(true, Ordering::Relaxed);
    tokio::time::sleep(drain_delay).await;
}

fn warn_if_open(registry: &Registry) {
    if registry.keys.is_empty() {
        tracing::warn!(
            "no [[auth.keys]] configured: Bridge accepts requests from ANY caller; configure keys before exposing it"
        );
    }
}

/// Serves Bridge with `workers` threads, nginx-style: each thread runs its own single-threaded
/// runtime and keeps its own upstream pool, so a request is handled start to finish on one
/// thread with no cross-thread wake-ups. One more thread accepts and deals connections to the
/// workers in turn. Blocks until every worker has drained after `shutdown` flips to true.
pub fn run_workers(
    listener: std::net::TcpListener,
    live: Arc<Live>,
    workers: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let registry = live.load();
    warn_if_open(&registry);
    listener.set_nonblocking(true)?;
    let flag = Arc::new(AtomicBool::new(false));
    let delay = registry.drain_delay;
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| {
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        draining(stop, flag.clone(), delay)
    };
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        senders.push(tx);
        let (live, stop) = (live.clone(), stopped(shutdown.clone()));
        let draining_flag = flag.clone();
        threads.push(spawn_runtime(format!("bridge-worker-{i}"), async move {
            let state = Arc::new(AppState::shared(live, draining_flag));
            serve_worker(server::Connections::Handoff(rx), state, stop).await;
            Ok(())
        })?);
    }
    let stop = stopped(shutdown);
    // The acceptor's thread is mostly idle: it also runs the health checks and the file watch.
    threads.push(spawn_runtime("bridge-accept".into(), async move {
        tokio::select! {
            () = server::distribute(TcpListener::from_std(listener)?, senders, stop) => {}
            () = background(live) => {}
        }
        Ok(())
    })?);
    for thread in threads {
        thread
            .join()
            .map_err(|_| std::io::Error::other("a Bridge thread panicked"))??;
    }
    Ok(())
}

/// Runs `task` on a new thread with its own single-threaded runtime.
fn spawn_runtime(
    name: String,
    task: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new().name(name).spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(task)
    })
}

async fn serve_worker(
    connections: impl Into<server::Connections>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let registry = state.registry();
    let (drain_timeout, header_read_timeout) =
        (registry.drain_timeout, registry.header_read_timeout);
    drop(registry);
    // Idle engine connections are closed before engines' keep-alive timeouts even when no
    // request comes to notice them.
    let sweeper = tokio::spawn(state.upstream.clone().sweep_forever());
    server::serve_with(
        connections,
        shutdown,
        drain_timeout,
        header_read_timeout,
        move |request| router::handle(state.clone(), request),
    )
    .await;
    sweeper.abort();
}

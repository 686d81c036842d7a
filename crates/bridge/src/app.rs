//! The assembly: Bridge's listeners, workers and background tasks, put together once.
//!
//! The binary and every test serve through [`App`], with the same worker model: one thread per
//! worker, each running its own single-threaded runtime and upstream pool (nginx's model), and
//! an acceptor thread that deals connections to them in turn and also runs the health checks,
//! the config file watch and the admin API. A request lives on one worker from accept to last
//! byte, with no cross-thread wake-ups. [`App::handle`] answers one request in process, with no
//! socket at all, for tests of routing and error shapes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::BoxError;
use crate::config::live::Live;
use crate::config::registry::Registry;
use crate::dispatch::{self, AppState};
use crate::fleet::Fleet;
use crate::observe::trace::Traces;
use crate::relay::ResBody;
use crate::upstream::{discovery, health};
use crate::{admin, server};

/// Longest wait at exit for the last spans to be exported.
const TRACE_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Bridge, assembled over a routing table.
#[derive(Debug, Clone)]
pub struct App {
    live: Arc<Live>,
    /// The fleet's limits: one per process, kept across reloads.
    fleet: Arc<Fleet>,
    /// Traces, when `[tracing]` exports them: one exporter per process.
    traces: Option<Arc<Traces>>,
    /// For requests answered in process ([`App::handle`]): a worker state of its own.
    local: Arc<AppState>,
}

/// A Bridge serving on threads of its own; dropping it asks it to stop.
#[derive(Debug)]
pub struct Serving {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl App {
    /// Bridge over the table in force in `live` (which may follow a config file).
    pub fn new(live: Arc<Live>) -> Self {
        let registry = live.load();
        let fleet = Arc::new(Fleet::new(&registry.limits));
        let traces = registry.tracing.as_ref().and_then(|settings| {
            Traces::new(settings)
                .inspect_err(|e| tracing::error!("{e}; serving without traces"))
                .ok()
                .map(Arc::new)
        });
        let state = AppState::new(live.clone(), Arc::default(), fleet.clone(), traces.clone());
        let local = Arc::new(state);
        App {
            live,
            fleet,
            traces,
            local,
        }
    }

    /// Bridge over a routing table that never changes.
    pub fn fixed(registry: Registry) -> Self {
        Self::new(Live::fixed(registry))
    }

    /// The routing table in force and how it changes.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Answers one request in process: the same dispatch as over a socket, on the caller's
    /// runtime (no health checks or file watch run for it).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match dispatch::handle(self.local.clone(), request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Serves on `listener`, and the admin API on `admin` when given, with the configured
    /// number of workers, until `stop` turns true; blocks until every worker has drained.
    pub fn serve(
        &self,
        listener: std::net::TcpListener,
        admin: Option<std::net::TcpListener>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let registry = self.live.load();
        warn_if_open(&registry);
        if registry
            .models
            .values()
            .any(|m| m.deployments.values().any(|d| d.dns.is_some()))
        {
            // Discovered deployments serve from the first request: their names are resolved,
            // and the new addresses checked, first (on a thread of its own: this one may be
            // inside a runtime already).
            let live = self.live.clone();
            spawn_runtime("bridge-discover".into(), async move {
                discovery::discover_once(&live).await;
                health::check_joining(&live.load()).await;
                Ok(())
            })?
            .join()
            .map_err(|_| std::io::Error::other("DNS discovery panicked"))??;
        }
        let registry = self.live.load();
        listener.set_nonblocking(true)?;
        if let Some(admin) = &admin {
            admin.set_nonblocking(true)?;
        }
        let flag = Arc::new(AtomicBool::new(false));
        let delay = registry.drain_delay;
        let stopped = |rx: watch::Receiver<bool>| draining(requested(rx), flag.clone(), delay);
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..registry.workers.max(1) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            senders.push(tx);
            let (live, stop) = (self.live.clone(), stopped(stop.clone()));
            let (draining_flag, fleet) = (flag.clone(), self.fleet.clone());
            let traces = self.traces.clone();
            threads.push(spawn_runtime(format!("bridge-worker-{i}"), async move {
                let state = Arc::new(AppState::new(live, draining_flag, fleet, traces));
                serve_worker(server::Connections::Handoff(rx), state, stop).await;
                Ok(())
            })?);
        }
        let accepting = stopped(stop.clone());
        let (live, fleet, draining) = (self.live.clone(), self.fleet.clone(), flag.clone());
        let traces = self.traces.clone();
        threads.push(spawn_runtime("bridge-accept".into(), async move {
            let admin_api = async {
                if let Some(admin) = admin {
                    let admin = TcpListener::from_std(admin)?;
                    let (live, fleet) = (live.clone(), fleet.clone());
                    admin::serve(admin, live, fleet, traces, draining, requested(stop)).await;
                }
                Ok::<_, std::io::Error>(())
            };
            let accept = server::distribute(TcpListener::from_std(listener)?, senders, accepting);
            tokio::select! {
                (_, admin_result) = async { tokio::join!(accept, admin_api) } => admin_result?,
                () = background(live.clone(), fleet.clone()) => {}
            }
            Ok(())
        })?);
        for thread in threads {
            thread
                .join()
                .map_err(|_| std::io::Error::other("a Bridge thread panicked"))??;
        }
        // Spans of the last requests go out before the process does, if the collector answers.
        if let Some(traces) = &self.traces {
            traces.clone().shutdown(TRACE_FLUSH_WAIT);
        }
        Ok(())
    }

    /// Starts [`App::serve`] on a thread of its own.
    pub fn start(
        self,
        listener: std::net::TcpListener,
        admin: Option<std::net::TcpListener>,
    ) -> std::io::Result<Serving> {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("bridge".into())
            .spawn(move || self.serve(listener, admin, stopped))?;
        Ok(Serving {
            stop,
            thread: Some(thread),
        })
    }
}

impl Serving {
    /// Asks Bridge to stop: `/health` answers 503, then requests in flight drain.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops and waits until every worker has drained.
    pub fn join(mut self) -> std::io::Result<()> {
        self.stop();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| std::io::Error::other("the Bridge thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn requested(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Health checks of the table in force, the config file watch, and the link to the fleet's
/// Redis. Never completes.
async fn background(live: Arc<Live>, fleet: Arc<Fleet>) {
    let watch = async {
        if live.path().is_some() {
            live.clone().watch_file().await;
        }
        std::future::pending::<()>().await
    };
    let fleet = async {
        fleet.keep_up().await;
        std::future::pending::<()>().await
    };
    let discovery = discovery::discover_forever(live.clone());
    tokio::join!(health::check_live(live.clone()), watch, fleet, discovery);
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
    connections: server::Connections,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let registry = state.registry();
    let settings = server::Settings {
        drain_timeout: registry.drain_timeout,
        header_read_timeout: registry.header_read_timeout,
        half_close: registry.half_close,
    };
    drop(registry);
    // Idle engine connections are closed before engines' keep-alive timeouts even when no
    // request comes to notice them.
    let sweeper = tokio::spawn(state.upstream().clone().sweep_forever());
    let upstream = state.upstream().clone();
    server::serve_with(
        connections,
        shutdown,
        settings,
        move || upstream.cut(),
        // Boxed per request: the connection's own future would otherwise be sized to hold the
        // request-handling future (~3 KB) for the connection's whole life, every open stream
        // and idle keep-alive connection paying for state it no longer uses (measured with
        // massif); boxed, it is freed as soon as the response head is ready.
        move |request| {
            Box::pin(dispatch::handle::<server::body::ClientBody>(
                state.clone(),
                request,
            ))
        },
    )
    .await;
    sweeper.abort();
}

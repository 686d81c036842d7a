//! The `bridge` command: parses the command line, loads the config, sets up logging and hands
//! over to the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use bridge::app::App;
use bridge::config::live::Live;
use bridge::config::{Config, LogFormat};
use bridge::demo;
use bridge::sim::{self, SimConfig};

#[derive(Parser)]
#[command(
    name = "bridge",
    version,
    about = "A fast, self-hosted OpenAI-compatible inference bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Bridge. Without --config it serves the built-in demo model `demo`.
    Serve {
        /// TOML config file (see the README's configuration reference).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config's [server] listen (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate a config file and print its routing table (exit status 1 if invalid).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage deployments through a running Bridge's admin API.
    Deployments {
        /// The admin API's address.
        #[arg(long, default_value = "http://127.0.0.1:8081", global = true)]
        admin: String,
        /// Environment variable holding an admin key, if the admin API needs one.
        #[arg(long, default_value = "BRIDGE_ADMIN_KEY", global = true)]
        key_env: String,
        #[command(subcommand)]
        action: bridge::admin::client::DeploymentAction,
    },
    /// TEST TOOL: run a simulated OpenAI-compatible engine (canned answers, no model).
    ///
    /// Used by Bridge's tests, benchmarks and demo. Requests may carry a `simulate` object to
    /// trigger faults (status, fail_after, error_after, no_done, delay_ms, chunks, gap_ms,
    /// reply, echo).
    Simulate {
        /// Address to listen on (port 0 picks a free port; the chosen one is printed).
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: String,
        /// Content chunks per streamed answer.
        #[arg(long, default_value_t = 8)]
        chunks: usize,
        /// Milliseconds between streamed chunks.
        #[arg(long, default_value_t = 0)]
        gap_ms: u64,
        /// Model name the engine reports.
        #[arg(long, default_value = "bridge-sim")]
        model: String,
        /// Environment variable holding an API key the engine requires (like vLLM's --api-key).
        #[arg(long)]
        api_key_env: Option<String>,
    },
}

/// mimalloc instead of glibc's malloc: after a burst of streams glibc kept the peak (its arenas
/// return memory only from their tops), and each burst ratcheted it up; mimalloc purges freed
/// pages shortly after they empty (built without transparent huge pages, which made both the
/// idle RSS and the memory per stream larger). Measured with the soak in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The log format comes from the config file, read here once just for it (serve reads and
    // validates the file again, and reports its errors).
    let format = match &cli.command {
        Command::Serve {
            config: Some(path), ..
        } => Config::load(path)
            .ok()
            .and_then(|c| c.server.log_format)
            .unwrap_or_default(),
        _ => LogFormat::Text,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(bridge::observe::log::start());
    let ansi = std::io::stderr().is_terminal();
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(ansi).init(),
    }
    bridge::observe::request_log::enable(format, ansi);
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    // Log lines still buffered go out before the process does, and before its last word.
    bridge::observe::log::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bridge: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Check { config } => {
            let name = config.display().to_string();
            let registry = Config::load(&config)
                .and_then(|c| c.validate(&name))
                .map_err(|e| e.to_string())?;
            print!("{name}: valid\n{}", registry.describe());
            Ok(())
        }
        Command::Deployments {
            admin,
            key_env,
            action,
        } => {
            let key = std::env::var(&key_env).ok();
            let text = bridge::admin::client::run(&admin, key.as_deref(), action).await?;
            print!("{text}");
            Ok(())
        }
        Command::Simulate {
            listen,
            chunks,
            gap_ms,
            model,
            api_key_env,
        } => {
            let api_key = match api_key_env {
                Some(var) => Some(
                    std::env::var(&var)
                        .map_err(|_| format!("environment variable {var} is not set"))?,
                ),
                None => None,
            };
            let listener = bind(&listen).await?;
            let config = SimConfig {
                model,
                chunks,
                gap: Duration::from_millis(gap_ms),
                api_key,
            };
            sim::run(listener, config, shutdown_signal()).await;
            Ok(())
        }
    }
}

async fn serve(config_path: Option<PathBuf>, listen: Option<String>) -> Result<(), String> {
    let (engine_stop, engine_stopped) = oneshot::channel::<()>();
    let live = match &config_path {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{name}: cannot read the file: {e}"))?;
            let mut config = Config::parse(&text, &name).map_err(|e| e.to_string())?;
            if listen.is_some() {
                config.server.listen = listen;
            }
            let registry = config.validate(&name).map_err(|e| e.to_string())?;
            if config.has_literal_keys() {
                warn_if_readable_by_others(path);
            }
            Live::from_file(registry, path.clone(), text)
        }
        None => {
            tracing::info!(
                "no --config given: serving the built-in demo model '{}'",
                demo::DEMO_MODEL
            );
            let registry = demo::start(listen, async {
                let _ = engine_stopped.await;
            })
            .await
            .map_err(|e| e.to_string())?;
            Live::fixed(registry)
        }
    };
    let registry = live.load();
    raise_fd_limit();
    let listener = bind_listener(registry.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", registry.listen))?;
    announce(&listener.local_addr().map_err(|e| e.to_string())?)?;
    let admin = match &registry.admin {
        Some(admin) => {
            let admin_listener = std::net::TcpListener::bind(admin.listen)
                .map_err(|e| format!("cannot listen on {} (admin): {e}", admin.listen))?;
            let address = admin_listener.local_addr().map_err(|e| e.to_string())?;
            println!("admin listening on http://{address}");
            tracing::info!("admin API listening on http://{address}");
            Some(admin_listener)
        }
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = App::new(live.clone());
    let serving = tokio::task::spawn_blocking(move || app.serve(listener, admin, stopped));
    let mut hangups = hangup_signals();
    loop {
        tokio::select! {
            () = shutdown_signal() => {
                let _ = stop.send(true);
                break;
            }
            Some(()) = hangups.recv() => match live.reload_all().await {
                Ok(true) => tracing::info!("configuration reloaded (SIGHUP)"),
                Ok(false) => tracing::info!("SIGHUP: the configuration did not change"),
                Err(e) => tracing::error!("configuration not reloaded, the one in force stays: {e}"),
            },
        }
    }
    serving
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("serving failed: {e}"))?;
    let _ = engine_stop.send(());
    Ok(())
}

/// A config file with keys in it should be readable by its owner only.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} holds keys in plain text and is readable by others (mode {:o}): chmod 600 it, or use key_env / key_file",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
}

/// SIGHUP, as a stream (empty where there is no such signal).
fn hangup_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Every proxied stream holds two descriptors (client and engine): raise the soft limit to the
/// hard one, as nginx's `worker_rlimit_nofile` and Go's runtime do, and say when it is low.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 65_536 => tracing::warn!(
            "open file limit is {limit}: at most ~{} concurrent streams; raise it (ulimit -n, LimitNOFILE)",
            limit / 2
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not raise the open file limit: {e}"),
    }
}

/// Accept backlog: bursts of thousands of new connections (a fleet of clients reconnecting)
/// must queue, not be dropped into SYN retries. The kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds Bridge's listening socket with [`LISTEN_BACKLOG`].
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Binds `addr` for the simulator and announces it.
async fn bind(addr: &str) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    announce(&listener.local_addr().map_err(|e| e.to_string())?)?;
    Ok(listener)
}

/// Prints the actual listening address on stdout (scripts read this line when they asked for
/// port 0).
fn announce(addr: &impl std::fmt::Display) -> Result<(), String> {
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!("listening on http://{addr}");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop requested: draining requests in flight");
}

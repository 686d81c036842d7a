//! The processes under test: the simulated engine, Bridge and nginx, each on a free loopback
//! port, plus what the benchmark reads about them from `/proc` (RSS, CPU time).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A child process that is killed when dropped.
pub struct Server {
    pub addr: String,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

impl Drop for Server {
    /// SIGTERM first, so nginx's master stops its workers (SIGKILL would orphan them), then
    /// SIGKILL for anything still running.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.start_kill();
    }
}

pub type Result<T> = std::result::Result<T, String>;

/// The `bridge` binary built beside this one.
pub fn bridge_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("bridge");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with cargo build --release",
            path.display()
        ))
    }
}

/// Starts `bridge ARGS`, which prints `listening on http://ADDR` once ready. With `log`, its
/// log (stderr) goes to that file at the default level, request log included, as an operator
/// runs it; without, only warnings reach the terminal (the engine).
async fn start_bridge_process(
    binary: &Path,
    name: &'static str,
    args: &[&str],
    log: Option<&Path>,
) -> Result<Server> {
    let mut command = Command::new(binary);
    match log {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            command.env_remove("RUST_LOG").stderr(file);
        }
        None => {
            command.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        }
    }
    if name == "engine" {
        // Runtime settings given for the experiment apply to Bridge, never to the engine.
        command.env_remove("TOKIO_WORKER_THREADS");
    }
    let mut child = command
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut line))
        .await
        .map_err(|_| format!("{name} did not start"))?
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("{name} printed {line:?}"))?
        .to_string();
    Ok(Server { addr, child })
}

/// The simulated engine (the upstream of every arm).
pub async fn start_engine() -> Result<Server> {
    start_bridge_process(
        &bridge_binary()?,
        "engine",
        &["simulate", "--listen", "127.0.0.1:0", "--model", "bench"],
        None,
    )
    .await
}

/// Bridge, routing model `bench` to `engine`.
pub async fn start_bridge(engine: &Server, dir: &Path) -> Result<Server> {
    start_bridge_with(engine, dir, "bridge", "").await
}

/// Another build of Bridge (`--baseline`), configured as [`start_bridge`]'s, for comparing
/// builds interleaved in one run.
pub async fn start_baseline(engine: &Server, dir: &Path, binary: &Path) -> Result<Server> {
    start_build(binary, engine, dir, "baseline", "").await
}

/// Bridge named `name` (its config file too), routing model `bench` to `engine`, with `more`
/// added to the model's table and the file.
pub async fn start_bridge_with(
    engine: &Server,
    dir: &Path,
    name: &'static str,
    more: &str,
) -> Result<Server> {
    start_build(&bridge_binary()?, engine, dir, name, more).await
}

async fn start_build(
    binary: &Path,
    engine: &Server,
    dir: &Path,
    name: &'static str,
    more: &str,
) -> Result<Server> {
    let config = format!(
        "[[models]]\nid = \"bench\"\n{more}\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"http://{}/v1\"]\n",
        engine.addr
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let path = path.display().to_string();
    start_bridge_process(
        binary,
        name,
        &["serve", "--listen", "127.0.0.1:0", "--config", &path],
        Some(&dir.join(format!("{name}.log"))),
    )
    .await
}

/// `redis-server` (Debian's package) on a free loopback port, keeping nothing on disk.
pub async fn start_redis() -> Result<Server> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start redis-server (scripts/bench.sh installs it): {e}"))?;
    listening("redis-server", child, port).await
}

/// One Redis command's answer, raw (RESP), e.g. `INFO commandstats`.
pub async fn redis_command(addr: &str, args: &[&str]) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0; 65536];
    let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A free loopback port (for nginx, which cannot be told to pick one).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// nginx as a plain reverse proxy to `engine`: one worker per core, a keep-alive upstream pool,
/// no buffering (so streams pass through) — the practical limit for "one extra hop".
pub async fn start_nginx(engine: &Server, dir: &Path) -> Result<Server> {
    start_nginx_as(engine, &dir.join("nginx"), "off").await
}

/// The same nginx, but reading each request's whole body before it forwards it
/// (`proxy_request_buffering on`, in memory up to 2 MiB): what a proxy that routes by a field
/// of the body must do, since the field may come last.
pub async fn start_nginx_buffered(engine: &Server, dir: &Path) -> Result<Server> {
    start_nginx_as(engine, &dir.join("nginx-buffered"), "on").await
}

async fn start_nginx_as(engine: &Server, dir: &Path, request_buffering: &str) -> Result<Server> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let conf = format!(
        r#"worker_processes 2;
worker_rlimit_nofile 200000;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 65536; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    client_max_body_size 64m;
    client_body_buffer_size 2m;
    keepalive_requests 1000000;
    upstream engine {{ server {engine}; keepalive 1024; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering {request_buffering};
        }}
    }}
}}
"#,
        dir = dir.display(),
        engine = engine.addr,
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .args(["-e", "stderr", "-g", "daemon off;", "-c"])
        .arg(&path)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start nginx (scripts/bench.sh installs it): {e}"))?;
    listening("nginx", child, port).await
}

/// `child` once it accepts connections on loopback `port` (within 5 s).
async fn listening(name: &str, child: Child, port: u16) -> Result<Server> {
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok(Server { addr, child });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{name} did not start"))
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `pid` and its direct children (nginx's workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// User + system CPU seconds used so far by `pids`.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // Linux reports these in clock ticks of 1/100 s on every architecture Bridge targets.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            // After the command name: state is field 0, utime 11, stime 12.
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (ticks(11) + ticks(12)) / TICKS_PER_SECOND
        })
        .sum()
}

/// Cores and CPU model, for the record.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {}", model.unwrap_or("unknown CPU"))
}

//! Test harness: engines, Bridge and a client, all over real loopback sockets on port 0.
//!
//! ```ignore
//! let engine = Sim::start().await;
//! let bridge = Bridge::start(&one_model(&engine.base())).await;
//! let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("demo")).await;
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::app::{App, Serving};
use bridge::config::Config;
use bridge::sim::{self, SimConfig};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// Stops a background server when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// A Bridge on threads of its own (asked to stop when dropped).
    serving: Option<Serving>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The OpenAI base URL an engine serves under.
    pub fn base(&self) -> String {
        self.url("/v1")
    }
}

impl Running {
    /// A Bridge served by [`App`] on `listener`.
    fn bridge(addr: SocketAddr, serving: Serving) -> Running {
        Running {
            addr,
            stop: None,
            serving: Some(serving),
        }
    }
}

fn listener_addr(listener: &std::net::TcpListener) -> SocketAddr {
    listener.local_addr().unwrap()
}

fn std_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn stopper() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// The simulated engine.
pub struct Sim;

impl Sim {
    /// The simulator on a given address (for a replica that comes up late).
    pub async fn start_at(addr: SocketAddr) -> Running {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, stop) = stopper();
        tokio::spawn(sim::run(listener, SimConfig::default(), stop));
        Running {
            addr,
            stop: Some(tx),
            serving: None,
        }
    }

    pub async fn start() -> Running {
        Self::start_with(SimConfig::default()).await
    }

    pub async fn start_with(config: SimConfig) -> Running {
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        let (tx, stop) = stopper();
        tokio::spawn(sim::run(listener, config, stop));
        Running {
            addr,
            stop: Some(tx),
            serving: None,
        }
    }
}

/// What an engine received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Handler =
    Arc<dyn Fn(Captured) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

/// An engine that records every request and answers with `handler`.
pub struct Capture {
    pub server: Running,
    pub seen: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    pub async fn start<F, Fut>(handler: F) -> Capture
    where
        F: Fn(Captured) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |c| Box::pin(handler(c)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        let (tx, stop) = stopper();
        let record = seen.clone();
        tokio::spawn(bridge::server::serve(
            listener,
            stop,
            bridge::server::DEFAULT_DRAIN_TIMEOUT,
            move |req: Request<Incoming>| {
                let handler = handler.clone();
                let record = record.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let captured = Captured {
                        method: parts.method,
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().map(str::to_string),
                        headers: parts.headers,
                        body,
                    };
                    record.lock().unwrap().push(captured.clone());
                    Ok::<_, std::convert::Infallible>(handler(captured).await)
                }
            },
        ));
        Capture {
            server: Running {
                addr,
                stop: Some(tx),
                serving: None,
            },
            seen,
        }
    }

    /// An engine that answers every request with `status` and a JSON `body`.
    pub async fn json(status: u16, body: Value) -> Capture {
        Self::start(move |_| {
            let body = body.clone();
            async move { json_response(status, &body) }
        })
        .await
    }

    /// The last request seen, not counting Bridge's active health checks (which run on
    /// Bridge's own thread and may land at any time).
    pub fn last(&self) -> Captured {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|c| c.path != "/health")
            .cloned()
            .expect("the engine saw no request")
    }

    /// Requests seen, not counting Bridge's active health checks.
    pub fn count(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path != "/health")
            .count()
    }
}

pub fn full_body(bytes: impl Into<Bytes>) -> TestBody {
    BoxBody::new(Full::new(bytes.into()).map_err(|never| match never {}))
}

pub fn json_response(status: u16, body: &Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(body.to_string()))
        .unwrap()
}

/// Bridge, in this test process, serving `config_toml` with the binary's worker model
/// ([`App`]); one worker unless the config says otherwise.
pub struct Bridge;

impl Bridge {
    pub async fn start(config_toml: &str) -> Running {
        let registry = registry(config_toml);
        let listener = std_listener();
        let addr = listener_addr(&listener);
        let serving = App::fixed(registry).start(listener, None).unwrap();
        Running::bridge(addr, serving)
    }

    /// The same Bridge, answering in process with no socket.
    pub fn in_process(config_toml: &str) -> App {
        App::fixed(registry(config_toml))
    }
}

/// `config_toml` validated, with `workers = 1` unless it sets `workers`: tests that count an
/// engine's connections expect one worker's pool.
fn registry(config_toml: &str) -> bridge::config::registry::Registry {
    let mut config = Config::parse(config_toml, "test.toml").unwrap();
    config.server.workers.get_or_insert(1);
    config.validate("test.toml").unwrap()
}

/// A real `bridge serve` process over a config file of its own; killed when dropped (unless
/// the test stopped it first).
pub struct BridgeProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`, as the process announced it.
    pub base: String,
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

impl BridgeProcess {
    /// Starts `bridge serve --config` with `config` (which should listen on port 0), its
    /// stderr piped when `capture_logs`.
    pub fn start(name: &str, config: &str, capture_logs: bool) -> BridgeProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = std::env::temp_dir().join(format!(
            "bridge-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bridge.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(if capture_logs {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("bridge did not start: {line}"))
            .to_string();
        BridgeProcess {
            child,
            base,
            dir,
            config: path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.base.strip_prefix("http://").unwrap().parse().unwrap()
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bridge and its admin API, in-process, serving the config file at `path` (watched for
/// changes, edited by the admin API). The file's `[admin]` listen address is not used: the
/// admin API gets its own port-0 listener.
pub async fn start_from_file(path: &std::path::Path) -> (Running, Running) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut config = Config::parse(&text, "test.toml").unwrap();
    config.server.workers.get_or_insert(1);
    let registry = config.validate("test.toml").unwrap();
    let live = bridge::config::live::Live::from_file(registry, path.to_path_buf(), text);
    let (listener, admin) = (std_listener(), std_listener());
    let (addr, admin_addr) = (listener_addr(&listener), listener_addr(&admin));
    let serving = App::new(live).start(listener, Some(admin)).unwrap();
    (
        Running::bridge(addr, serving),
        Running {
            addr: admin_addr,
            stop: None,
            serving: None,
        },
    )
}

/// A config with one model `m`, production deployment `d1` at `base` (more TOML may be
/// appended: it lands in that deployment's table).
pub fn one_model(base: &str) -> String {
    // Active health checks off: test engines that count or gate requests must see only the
    // test's own. Tests of health checking turn them on.
    format!(
        "[[models]]\nid = \"m\"\nproduction = \"d1\"\n[[models.deployments]]\nid = \"d1\"\nreplicas = [\"{base}\"]\nhealth_path = \"\"\n"
    )
}

/// A chat request routed to `model_id` (production deployment).
pub fn chat(model_id: &str) -> Value {
    json!({
        "model": "engine-model",
        "messages": [{"role": "user", "content": "hi"}],
        "baseten": {"model_id": model_id},
    })
}

/// A reply, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The OpenAI error envelope's inner object, checking its shape on the way.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].is_string(), "no message: {v}");
        assert!(e["type"].is_string(), "no type: {v}");
        assert!(
            e["param"].is_string() || e["param"].is_null(),
            "bad param: {v}"
        );
        assert!(
            e["code"].is_string() || e["code"].is_null(),
            "code must be string or null: {v}"
        );
        assert!(
            self.headers.contains_key("x-request-id"),
            "no x-request-id on an error"
        );
        e
    }

    /// The `data:` payloads of an SSE body.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and reads the whole reply (bounded by a 20 s timeout so a hang fails).
pub async fn send(method: Method, url: &str, body: Bytes, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    let has_type = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !has_type && !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Full::new(body)).unwrap();
    let exchange = async {
        let response = client().request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("request hung")
}

pub async fn post(url: &str, body: Value) -> Reply {
    send(Method::POST, url, Bytes::from(body.to_string()), &[]).await
}

pub async fn post_with(url: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    send(Method::POST, url, Bytes::from(body.to_string()), headers).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, url, Bytes::new(), headers).await
}

pub async fn delete(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::DELETE, url, Bytes::new(), headers).await
}

/// A response body fed from a channel, for engines that stream under a test's control.
/// Sending `Err` aborts the connection mid-body, like a crashing engine.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, TestBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(hyper::body::Frame::data), rx))
    });
    (tx, BoxBody::new(http_body_util::StreamBody::new(stream)))
}

pub fn sse_response(body: TestBody) -> Response<TestBody> {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

/// Opens a request and returns the response with its body still streaming.
pub async fn open(url: &str, body: Value) -> Response<Incoming> {
    open_with(url, body, &[]).await
}

/// [`open`] with extra headers.
pub async fn open_with(url: &str, body: Value, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("no response headers")
        .unwrap()
}

/// Reads the next data frame of a streaming body (None at the end), failing on a hang.
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("stream hung")?;
        if let Ok(data) = frame.expect("body error").into_data() {
            return Some(data);
        }
    }
}

/// Writes raw bytes to `addr` and reads one HTTP response (head and content-length body),
/// without sending anything more: for requests no well-behaved client would make.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    return text;
                }
            }
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return String::from_utf8_lossy(&buf).to_string();
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("raw exchange hung")
}

/// The value of the sample `series` (name and labels, exactly as exposed) in metrics `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A loopback port held by a bound, non-listening socket: connections are refused until the
/// socket is dropped and something is started there.
pub fn reserve_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// A loopback address where nothing listens and nothing else can start listening: the port
/// stays bound (never listening) for the life of the test process, so connections to it are
/// refused and a later port-0 bind cannot be handed the same port.
pub async fn closed_port() -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Deliberately kept open until the test process exits.
    std::mem::forget(socket);
    format!("http://{addr}/v1")
}

//! Upstream connections: kept alive and reused, stale ones never cost a request, and a client
//! that leaves takes the engine connection with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw HTTP/1.1 engine: answers each request with a small JSON body and counts connections.
/// With `close_after_one`, it closes every connection after its first answer without saying so
/// (no `Connection: close`), like an engine whose keep-alive timer just fired.
async fn raw_engine(close_after_one: bool) -> (String, Arc<AtomicUsize>) {
    raw_engine_with(close_after_one, None, None).await
}

/// [`raw_engine`], closing connections idle for `keep_alive` (as uvicorn does after 5 s), and
/// reporting each connection that the other side closed on `closed`.
async fn raw_engine_with(
    close_after_one: bool,
    keep_alive: Option<Duration>,
    closed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: headers, then content-length bytes of body.
                    let (head_end, length) = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break (end, length);
                            }
                        }
                        let read = socket.read(&mut chunk);
                        let read = match keep_alive.filter(|_| buf.is_empty()) {
                            Some(limit) => match tokio::time::timeout(limit, read).await {
                                Ok(read) => read,
                                Err(_) => return, // idle too long: close without a word
                            },
                            None => read.await,
                        };
                        match read {
                            Ok(0) | Err(_) => {
                                if let Some(closed) = &closed {
                                    let _ = closed.send(());
                                }
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..head_end + 4 + length);
                    let body = r#"{"ok":true}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() || close_after_one {
                        return;
                    }
                }
            });
        }
    });
    (base, accepted)
}

#[tokio::test]
async fn sequential_requests_reuse_one_engine_connection() {
    let (base, accepted) = raw_engine(false).await;
    let bridge = Bridge::start(&one_model(&base)).await;
    for _ in 0..20 {
        let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every request after the first reused the connection"
    );
}

/// Two layers keep a stale connection from costing a request: checkout discards connections
/// the engine has closed, and a request hyper could not write is retried. Removing both makes
/// this test fail; either one alone keeps it green.
#[tokio::test]
async fn engines_that_silently_close_kept_alive_connections_cost_no_request() {
    let (base, accepted) = raw_engine(true).await;
    let bridge = Bridge::start(&one_model(&base)).await;
    for i in 0..50 {
        let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["ok"], true);
    }
    assert!(
        accepted.load(Ordering::SeqCst) >= 50,
        "one connection per request"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_closes_the_engine_connection() {
    let (tx_slot, rx_slot) = tokio::sync::oneshot::channel();
    let tx_slot = Arc::new(std::sync::Mutex::new(Some(tx_slot)));
    let engine = Capture::start(move |_| {
        let (tx, body) = channel_body();
        if let Some(slot) = tx_slot.lock().unwrap().take() {
            let _ = slot.send(tx);
        }
        async move { sse_response(body) }
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let mut body = chat("m");
    body["stream"] = json!(true);
    let response = open(&bridge.url("/v1/direct/chat/completions"), body).await;
    let tx = rx_slot.await.unwrap();
    tx.send(Ok(bytes::Bytes::from_static(b"data: {\"a\":1}\n\n")))
        .await
        .unwrap();
    let mut stream = response.into_body();
    assert!(next_chunk(&mut stream).await.is_some());
    drop(stream); // the client goes away mid-stream
                  // The engine's response body is dropped once its connection closes.
    tokio::time::timeout(Duration::from_secs(1), tx.closed())
        .await
        .expect("the engine connection was not closed within 1 s of the client leaving");
    assert_eq!(cancellations(&bridge).await, 1);
}

/// `bridge_client_cancellations_total` for model `m`, deployment `d1`.
async fn cancellations(bridge: &Running) -> u64 {
    let text = get(&bridge.url("/metrics"), &[]).await.text();
    metric(
        &text,
        "bridge_client_cancellations_total{model=\"m\",deployment=\"d1\"}",
    )
    .unwrap_or_else(|| panic!("no cancellation counter: {text}")) as u64
}

#[tokio::test]
async fn finished_and_failed_requests_are_not_cancellations() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let mut streaming = chat("m");
    streaming["stream"] = json!(true);
    assert_eq!(post(&url, chat("m")).await.status, 200);
    assert!(post(&url, streaming.clone())
        .await
        .text()
        .ends_with("data: [DONE]\n\n"));
    let mut failing = chat("m");
    failing["simulate"] = json!({"status": 500});
    assert_eq!(post(&url, failing).await.status, 500);
    streaming["simulate"] = json!({"fail_after": 2, "gap_ms": 20});
    assert!(post(&url, streaming)
        .await
        .text()
        .contains("upstream_stream_broken"));
    assert_eq!(cancellations(&bridge).await, 0);
}

#[tokio::test]
async fn a_client_leaving_a_non_streaming_request_closes_the_engine_connection() {
    // The engine reads the request, never answers, and reports when its socket reaches EOF.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (got_request, request_seen) = tokio::sync::oneshot::channel();
    let (saw_eof, eof_seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = got_request.send(());
        // Generating... until the connection closes.
        while socket.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
        let _ = saw_eof.send(());
    });
    let bridge = Bridge::start(&one_model(&base)).await;
    let body = chat("m").to_string();
    let mut client = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    let request = format!(
        "POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), request_seen)
        .await
        .unwrap()
        .unwrap();
    drop(client); // the client gives up while the engine is still working
    tokio::time::timeout(Duration::from_secs(1), eof_seen)
        .await
        .expect("the engine connection stayed open after the client left")
        .unwrap();
    assert_eq!(cancellations(&bridge).await, 1);
}

#[tokio::test]
async fn an_engine_restarted_on_the_same_port_serves_the_next_request() {
    let engine = Sim::start().await;
    let addr = engine.addr;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/direct/chat/completions");
    for _ in 0..3 {
        assert_eq!(post(&url, chat("m")).await.status, 200);
    }
    // The engine restarts: its kept-alive connections die with it.
    drop(engine);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _restarted = Sim::start_at(addr).await;
    for i in 0..10 {
        let reply = post(&url, chat("m")).await;
        assert_eq!(
            reply.status,
            200,
            "request {i} after the restart: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn an_engine_closing_idle_connections_after_1_s_costs_no_request() {
    let (base, accepted) = raw_engine_with(false, Some(Duration::from_secs(1)), None).await;
    let bridge = Bridge::start(&one_model(&base)).await;
    // Each request comes as the engine closes the previous one's connection: the race peers
    // lose requests to.
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "the engine did close idle connections"
    );
}

#[tokio::test]
async fn idle_engine_connections_are_closed_before_engine_keep_alive_timeouts() {
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let (base, _) = raw_engine_with(false, None, Some(closed_tx)).await;
    let bridge = Bridge::start(&one_model(&base)).await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(reply.status, 200);
    // No more traffic: Bridge closes the idle connection itself, before vLLM's 5 s would.
    tokio::time::timeout(Duration::from_secs(6), closed.recv())
        .await
        .expect("Bridge kept an idle engine connection open");
}

#[tokio::test]
async fn a_client_leaving_after_done_or_after_an_engine_fault_is_no_cancellation() {
    // The engine sends a whole answer, then keeps its body open; or sends bytes that are not
    // UTF-8. Either way the client's answer is over when it leaves.
    let engine = Capture::start(|captured: Captured| async move {
        let broken = captured.json()["broken"] == true;
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let event: &'static [u8] = if broken {
                b"data: {\"a\":\"\xff\"}\n\n"
            } else {
                b"data: {\"a\":1}\n\ndata: [DONE]\n\n"
            };
            let _ = tx.send(Ok(bytes::Bytes::from_static(event))).await;
            tx.closed().await; // never ends by itself
        });
        sse_response(body)
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    for broken in [false, true] {
        let mut body = chat("m");
        body["stream"] = json!(true);
        body["broken"] = json!(broken);
        let response = open(&bridge.url("/v1/direct/chat/completions"), body).await;
        let mut stream = response.into_body();
        let mut text = Vec::new();
        while !String::from_utf8_lossy(&text).contains("[DONE]") {
            text.extend_from_slice(&next_chunk(&mut stream).await.unwrap());
        }
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cancellations(&bridge).await, 0);
}

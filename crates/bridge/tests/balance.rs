//! Replica choice and safe retries: a dead replica costs no request that never reached it, and
//! a slow replica gets less work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::AsyncReadExt;

fn three_replicas(replicas: &[String], extra: &str) -> String {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [{}]\n{extra}",
        list.join(", ")
    )
}

#[tokio::test]
async fn a_dead_replica_costs_no_request_that_never_reached_it() {
    let (a, b) = (Sim::start().await, Sim::start().await);
    let replicas = [a.base(), closed_port().await, b.base()];
    let bridge = Bridge::start(&three_replicas(&replicas, "")).await;
    for i in 0..60 {
        let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    // The same fleet without retries loses the requests that land on the dead replica.
    let no_retries = Bridge::start(&three_replicas(
        &replicas,
        "max_retries = 0\neject_after = 1000\n",
    ))
    .await;
    let mut failed = 0;
    for _ in 0..60 {
        let reply = post(&no_retries.url("/v1/direct/chat/completions"), chat("m")).await;
        if reply.status == 502 {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "without retries some requests must fail, or this test proves nothing"
    );
}

#[tokio::test]
async fn a_slow_replica_gets_less_work() {
    let slow = Capture::start(|_| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        json_response(200, &json!({"who": "slow"}))
    })
    .await;
    let fast = Capture::json(200, json!({"who": "fast"})).await;
    let bridge = Bridge::start(&three_replicas(
        &[slow.server.base(), fast.server.base()],
        "",
    ))
    .await;
    let url = bridge.url("/v1/direct/chat/completions");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..15 {
                assert_eq!(post(&url, chat("m")).await.status, 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let (s, f) = (slow.count(), fast.count());
    assert_eq!(s + f, 60);
    // Random choice splits about 30/30 (sd ~4). Least outstanding measured 7 to 12 slow in ten
    // runs: ties (both replicas with one request in flight) are broken at random, as specified,
    // so the slow one still gets some. A bound of 20 fails for random choice and holds for this.
    assert!(s * 2 < f, "slow replica served {s}, fast {f}");
}

/// An engine that reads each request whole, then closes the connection without answering, and
/// counts the requests it read.
async fn reads_then_hangs_up() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let read = Arc::new(AtomicUsize::new(0));
    let count = read.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = socket.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            count.fetch_add(1, Ordering::SeqCst);
                            return; // hang up: the request was read, no answer comes
                        }
                    }
                }
            });
        }
    });
    (base, read)
}

#[tokio::test]
async fn a_request_that_reached_the_engine_is_never_retried() {
    let (hangs_up, read) = reads_then_hangs_up().await;
    let other = Capture::json(200, json!({"who": "other"})).await;
    // Health probes would be read (and hung up on) too: checks off, so only requests count.
    let config = three_replicas(
        &[hangs_up, other.server.base()],
        "eject_after = 1000\nhealth_path = \"\"\n",
    );
    let bridge = Bridge::start(&config).await;
    let mut failed = 0;
    for _ in 0..20 {
        let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
        if reply.status == 502 {
            failed += 1;
        }
    }
    let read = read.load(Ordering::SeqCst);
    assert!(
        read > 0,
        "the hanging-up replica was never chosen; the test proves nothing"
    );
    assert_eq!(failed, read, "each request the engine read fails visibly");
    assert_eq!(
        read + other.count(),
        20,
        "a request that reached an engine was sent to another"
    );
}

#[tokio::test]
async fn a_full_deployment_queues_then_answers_429_with_retry_after() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let engine = Capture::start(move |_| {
        let gate = gate.clone();
        async move {
            // Hold every answer until the test releases it.
            gate.acquire().await.unwrap().forget();
            json_response(200, &json!({"ok": true}))
        }
    })
    .await;
    let config = format!(
        "{}max_concurrent = 1\nmax_queued = 1\n",
        one_model(&engine.server.base())
    );
    let bridge = Bridge::start(&config).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, chat("m")).await }
    });
    while engine.count() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::spawn({
        let url = url.clone();
        async move { post(&url, chat("m")).await }
    });
    // Give the second request time to reach the queue (ordering, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        engine.count(),
        1,
        "the queued request must not reach the engine yet"
    );
    let third = post(&url, chat("m")).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.headers["retry-after"], "1");
    assert_eq!(third.error()["code"], "deployment_overloaded");
    assert!(
        !third.headers.contains_key("x-should-retry"),
        "the SDK should retry after the delay"
    );
    release.add_permits(2);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        second.await.unwrap().status,
        200,
        "the queued request is served once a slot frees"
    );
    assert_eq!(engine.count(), 2);
}

#[tokio::test]
async fn killing_one_of_three_replicas_under_steady_load_fails_no_request() {
    let (a, b) = (Sim::start().await, Sim::start().await);
    let mut victim = Some(Sim::start().await);
    let replicas = [a.base(), victim.as_ref().unwrap().base(), b.base()];
    let bridge = Bridge::start(&three_replicas(&replicas, "")).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..100 {
                let reply = post(&url, chat("m")).await;
                statuses.push((reply.status, reply.text()));
            }
            statuses
        }));
    }
    // Kill one replica while the load runs: it stops accepting and closes its idle connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(victim.take());
    for client in clients {
        for (status, text) in client.await.unwrap() {
            assert_eq!(status, 200, "a request failed after a replica died: {text}");
        }
    }
}

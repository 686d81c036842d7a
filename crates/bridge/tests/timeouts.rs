//! Time limits after the first byte: a silent engine and an over-long request end clearly,
//! never hang, and release the engine connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

fn with_timeouts(base: &str, timeouts: &str) -> String {
    format!(
        "{}[models.deployments.timeouts]\n{timeouts}\n",
        one_model(base)
    )
}

type Slot = Arc<Mutex<Option<tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>>>>;

/// An engine whose answer the test writes by hand, as SSE or as JSON with a declared length.
async fn stalling_engine(sse: bool) -> (Capture, Slot) {
    let slot: Slot = Arc::new(Mutex::new(None));
    let put = slot.clone();
    let engine = Capture::start(move |_| {
        let (tx, body) = channel_body();
        *put.lock().unwrap() = Some(tx);
        async move {
            if sse {
                sse_response(body)
            } else {
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("content-length", "100")
                    .body(body)
                    .unwrap()
            }
        }
    })
    .await;
    (engine, slot)
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_an_in_band_timeout() {
    let (engine, slot) = stalling_engine(true).await;
    let bridge = Bridge::start(&with_timeouts(&engine.server.base(), "idle_ms = 300")).await;
    let mut request = chat("m");
    request["stream"] = json!(true);
    let response = open(&bridge.url("/v1/direct/chat/completions"), request).await;
    let tx = slot.lock().unwrap().take().unwrap();
    tx.send(Ok(Bytes::from_static(b"data: {\"a\":1}\n\n")))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("data: {\"a\":1}\n\n"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let error: Value = serde_json::from_str(
        text.split("\n\n")
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("300 ms"));
    tokio::time::timeout(Duration::from_secs(1), tx.closed())
        .await
        .expect("engine connection kept open");
}

#[tokio::test]
async fn a_json_body_that_goes_silent_is_cut_off_not_left_hanging() {
    let (engine, slot) = stalling_engine(false).await;
    let bridge = Bridge::start(&with_timeouts(&engine.server.base(), "idle_ms = 300")).await;
    let response = open(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(response.status(), 200);
    let tx = slot.lock().unwrap().take().unwrap();
    tx.send(Ok(Bytes::from_static(b"{\"partial\":")))
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the client must see a broken body, not a hang or a short success"
    );
    drop(tx);
}

#[tokio::test]
async fn a_request_over_its_total_time_ends_in_band_or_with_504() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&with_timeouts(&engine.base(), "total_ms = 400")).await;
    let mut request = chat("m");
    request["stream"] = json!(true);
    request["simulate"] = json!({"chunks": 20, "gap_ms": 100});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), request).await;
    let events = reply.events();
    assert!(
        events.len() < 22,
        "the stream should have been stopped early"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events[events.len() - 2].contains("total time limit"),
        "{events:?}"
    );

    let mut slow = chat("m");
    slow["simulate"] = json!({"delay_ms": 2000});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), slow).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error()["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_replica_that_does_not_accept_connections_times_out_at_connect_ms() {
    // A listener with a full accept queue that never accepts: new SYNs are dropped, so a
    // connection attempt hangs instead of being refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let bridge = Bridge::start(&with_timeouts(
        &format!("http://{addr}/v1"),
        "connect_ms = 300",
    ))
    .await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.error()["message"]
            .as_str()
            .unwrap()
            .contains("no connection within 300 ms"),
        "{}",
        reply.text()
    );
}

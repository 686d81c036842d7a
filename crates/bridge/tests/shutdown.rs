//! Graceful shutdown of the real binary: SIGTERM while streams are open lets every one finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The `bridge` binary with `server` settings and one model at `engine`.
fn spawn_bridge(name: &str, server: &str, engine: &Running) -> BridgeProcess {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n{}",
        one_model(&engine.base())
    );
    BridgeProcess::start(name, &config, false)
}

/// Waits for the process to exit by itself and checks it succeeded.
async fn exits_cleanly(mut bridge: BridgeProcess) {
    let exited = tokio::task::spawn_blocking(move || {
        let status = bridge.child.wait();
        (status, bridge)
    })
    .await
    .unwrap();
    let status = exited.0.unwrap();
    assert!(status.success(), "bridge exited with {status}");
}

#[tokio::test]
async fn sigterm_during_50_open_streams_lets_all_of_them_finish() {
    let engine = Sim::start().await;
    let bridge = spawn_bridge("drain", "", &engine);
    let (base, addr) = (bridge.base.clone(), bridge.addr());

    // 50 streams of 20 chunks 50 ms apart (about a second each), all under way.
    let mut request = chat("m");
    request["stream"] = json!(true);
    request["simulate"] = json!({"chunks": 20, "gap_ms": 50});
    let mut streams = Vec::new();
    for _ in 0..50 {
        let response = open(
            &format!("{base}/v1/direct/chat/completions"),
            request.clone(),
        )
        .await;
        let mut body = response.into_body();
        let first = next_chunk(&mut body).await.unwrap();
        streams.push((first.to_vec(), body));
    }

    bridge.terminate();
    // New connections are refused once the stop began.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after SIGTERM"
    );

    for (i, (mut received, mut body)) in streams.into_iter().enumerate() {
        while let Some(chunk) = next_chunk(&mut body).await {
            received.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(received).unwrap();
        assert!(
            text.ends_with("data: [DONE]\n\n"),
            "stream {i} was cut: {text}"
        );
        assert!(
            !text.contains("\"error\""),
            "stream {i} ended in error: {text}"
        );
        assert_eq!(
            text.matches("data: ").count(),
            20 + 2,
            "stream {i} lost events"
        );
    }
    exits_cleanly(bridge).await;
}

#[tokio::test]
async fn during_the_drain_delay_health_is_503_and_new_requests_are_still_served() {
    let engine = Sim::start().await;
    let bridge = spawn_bridge("delay", "drain_delay_ms = 1500", &engine);
    let (base, addr) = (bridge.base.clone(), bridge.addr());
    let mut request = chat("m");
    request["stream"] = json!(true);
    request["simulate"] = json!({"chunks": 40, "gap_ms": 50});
    let response = open(&format!("{base}/v1/direct/chat/completions"), request).await;
    let mut stream = response.into_body();
    let mut received = next_chunk(&mut stream).await.unwrap().to_vec();
    assert_eq!(get(&format!("{base}/health"), &[]).await.status, 200);

    bridge.terminate();
    // The signal takes a moment to arrive; health turns within the delay.
    let mut health = get(&format!("{base}/health"), &[]).await;
    for _ in 0..20 {
        if health.status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        health = get(&format!("{base}/health"), &[]).await;
    }
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (503, "draining")
    );
    let late = post(&format!("{base}/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(
        late.status,
        200,
        "a request during the delay failed: {}",
        late.text()
    );
    // After the delay, no new connections; the open stream still finishes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after the drain delay"
    );
    while let Some(chunk) = next_chunk(&mut stream).await {
        received.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(received).unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\""),
        "{text}"
    );
    exits_cleanly(bridge).await;
}

//! Graceful shutdown of the real binary: SIGTERM while streams are open lets every one finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Starts the `bridge` binary with `server` settings and one model at `engine`; returns the
/// process, its base URL and its temporary directory.
fn spawn_bridge(name: &str, server: &str, engine: &Running) -> (Child, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("bridge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n{}",
            one_model(&engine.base())
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    (child, base, dir)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_during_50_open_streams_lets_all_of_them_finish() {
    let engine = Sim::start().await;
    let (mut child, base, dir) = spawn_bridge("drain", "", &engine);
    let addr: std::net::SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();

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

    sigterm(&child);
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
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "bridge exited with {exited}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn during_the_drain_delay_health_is_503_and_new_requests_are_still_served() {
    let engine = Sim::start().await;
    let (mut child, base, dir) = spawn_bridge("delay", "drain_delay_ms = 1500", &engine);
    let addr: std::net::SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let mut request = chat("m");
    request["stream"] = json!(true);
    request["simulate"] = json!({"chunks": 40, "gap_ms": 50});
    let response = open(&format!("{base}/v1/direct/chat/completions"), request).await;
    let mut stream = response.into_body();
    let mut received = next_chunk(&mut stream).await.unwrap().to_vec();
    assert_eq!(get(&format!("{base}/health"), &[]).await.status, 200);

    sigterm(&child);
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
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "bridge exited with {exited}");
    std::fs::remove_dir_all(&dir).ok();
}

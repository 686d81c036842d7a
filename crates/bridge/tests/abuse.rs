//! Hostile engines: answers far larger than any completion, stream lines that never end,
//! bytes that are not UTF-8, compressed streams. Each is bounded and reported clearly, and the
//! `bridge` process's peak memory stays small, read from /proc.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::json;

/// An engine that misbehaves as the request's `case` says.
async fn abusive_engine() -> Capture {
    Capture::start(|captured: Captured| async move {
        let case = captured.json()["case"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (tx, body) = channel_body();
        let response = match case.as_str() {
            "compressed" => http::Response::builder()
                .header("content-type", "text/event-stream")
                .header("content-encoding", "gzip")
                .body(full_body(&b"\x1f\x8b\x08\x00"[..]))
                .unwrap(),
            "huge_json" => http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
            _ => sse_response(body),
        };
        tokio::spawn(async move {
            match case.as_str() {
                // 256 MiB of JSON, far beyond any completion.
                "huge_json" => {
                    let mib = Bytes::from(vec![b' '; 1 << 20]);
                    let _ = tx.send(Ok(Bytes::from_static(b"{\"pad\": \""))).await;
                    for _ in 0..256 {
                        if tx.send(Ok(mib.clone())).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Ok(Bytes::from_static(b"\"}"))).await;
                }
                // A stream line that never ends: 64 MiB without a newline.
                "endless_line" => {
                    let _ = tx
                        .send(Ok(Bytes::from_static(b"data: {\"a\":1}\n\ndata: ")))
                        .await;
                    let mib = Bytes::from(vec![b'a'; 1 << 20]);
                    for _ in 0..64 {
                        if tx.send(Ok(mib.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                "invalid_utf8" => {
                    let _ = tx
                        .send(Ok(Bytes::from_static(b"data: {\"a\":\"ok\"}\n\n")))
                        .await;
                    let _ = tx
                        .send(Ok(Bytes::from_static(b"data: {\"a\":\"\xff\xfe\"}\n\n")))
                        .await;
                    let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                }
                _ => {}
            }
        });
        response
    })
    .await
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn abusive_engines_are_bounded_and_reported_with_little_memory() {
    let engine = abusive_engine().await;
    let bridge = BridgeProcess::start(
        "abuse",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{}",
            one_model(&engine.server.base())
        ),
        false,
    );
    let base = bridge.base.clone();
    let url = format!("{base}/v1/direct/chat/completions");
    let ask = |case: &str, stream: bool| {
        let mut body = chat("m");
        body["case"] = json!(case);
        body["stream"] = json!(stream);
        body
    };

    // A huge JSON answer streams through whole, never held.
    let response = open(&url, ask("huge_json", false)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(received, 256 * (1 << 20) + 11);

    let endless = post(&url, ask("endless_line", true)).await;
    let events = endless.events();
    assert_eq!(events[0], "{\"a\":1}", "what came before is kept");
    assert!(
        endless.text().contains("upstream_event_too_large"),
        "{}",
        &endless.text()[..200.min(endless.text().len())]
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let invalid = post(&url, ask("invalid_utf8", true)).await;
    assert!(
        invalid.text().starts_with("data: {\"a\":\"ok\"}\n\n"),
        "{}",
        invalid.text()
    );
    assert!(
        invalid.text().contains("upstream_invalid_utf8"),
        "{}",
        invalid.text()
    );
    assert!(
        !invalid.body.windows(2).any(|w| w == b"\xff\xfe"),
        "invalid bytes reached the client"
    );

    let compressed = post(&url, ask("compressed", true)).await;
    assert_eq!(compressed.status, 502);
    assert_eq!(compressed.error()["code"], "upstream_compressed");

    let peak = peak_rss_kib(bridge.child.id());
    drop(bridge);
    // 256 MiB passed through and a 64 MiB line was refused at 8 MiB: the peak stays far below.
    assert!(peak < 64 * 1024, "bridge peaked at {peak} KiB");
}

//! Streaming: events relayed as they arrive, usage chunks passed through, and every way an
//! engine can fail mid-stream turned into an in-band error followed by `[DONE]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

fn stream_request() -> Value {
    let mut body = chat("m");
    body["stream"] = json!(true);
    body
}

/// An engine whose stream the test drives through the returned sender.
async fn controlled_engine() -> (
    Capture,
    Arc<Mutex<Option<tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>>>>,
) {
    let slot = Arc::new(Mutex::new(None));
    let put = slot.clone();
    let engine = Capture::start(move |_| {
        let (tx, body) = channel_body();
        *put.lock().unwrap() = Some(tx);
        async move { sse_response(body) }
    })
    .await;
    (engine, slot)
}

#[tokio::test]
async fn events_reach_the_client_before_the_engine_sends_the_next() {
    let (engine, slot) = controlled_engine().await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let response = open(&bridge.url("/v1/direct/chat/completions"), stream_request()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let tx = slot.lock().unwrap().take().unwrap();
    let mut body = response.into_body();
    // Each event must arrive while the engine is still holding the next one back: a relay
    // that buffered would leave `next_chunk` waiting until its timeout fails the test.
    for i in 0..3 {
        let event = format!("data: {{\"i\":{i}}}\n\n");
        tx.send(Ok(Bytes::from(event.clone()))).await.unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap(), event.as_bytes());
    }
    // An event split across two engine chunks arrives whole, once complete.
    tx.send(Ok(Bytes::from_static(b"data: {\"spl")))
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"it\":1}\n\ndata: [DONE]\n\n")))
        .await
        .unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: {\"split\":1}\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn usage_chunk_is_relayed_when_asked_for() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let mut body = stream_request();
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
    let events = reply.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["usage"], Value::Null);
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");

    let plain = post(&bridge.url("/v1/direct/chat/completions"), stream_request()).await;
    assert!(
        plain.events().iter().all(|e| !e.contains("\"usage\"")),
        "no usage unless asked"
    );
}

/// The error event Bridge sends: the OpenAI envelope with a string code, then `[DONE]`.
fn assert_ends_in_band(reply: &Reply, code: &str, message_part: &str) {
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.text()
    );
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], code, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(message_part),
        "{error}"
    );
    assert!(error["error"]["type"].is_string());
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_in_band_error() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let mut body = stream_request();
    // The gap lets the engine flush the first chunks before it crashes.
    body["simulate"] = json!({"fail_after": 3, "gap_ms": 20});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
    assert_ends_in_band(&reply, "upstream_stream_broken", "stream broke");
    assert_eq!(
        reply.events().len(),
        3 + 2,
        "the 3 chunks sent before the crash are kept"
    );
}

#[tokio::test]
async fn a_stream_without_done_ends_with_an_in_band_error() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let mut body = stream_request();
    body["simulate"] = json!({"no_done": true});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
    assert_ends_in_band(&reply, "upstream_stream_incomplete", "[DONE]");
}

#[tokio::test]
async fn engine_error_events_are_rewritten_to_the_envelope() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    for flat in [false, true] {
        let mut body = stream_request();
        body["simulate"] = json!({"error_after": 2, "flat_error": flat});
        let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
        assert_ends_in_band(&reply, "500", "simulated in-band error");
    }
}

#[tokio::test]
async fn engine_connection_dropped_mid_event_is_reported() {
    let (engine, slot) = controlled_engine().await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let response = open(&bridge.url("/v1/direct/chat/completions"), stream_request()).await;
    let tx = slot.lock().unwrap().take().unwrap();
    tx.send(Ok(Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"half")))
        .await
        .unwrap();
    let mut body = response.into_body();
    // Once the first event came through, the half event reached Bridge in the same write.
    let mut all = next_chunk(&mut body).await.unwrap().to_vec();
    tx.send(Err("engine crashed".into())).await.unwrap();
    while let Some(chunk) = next_chunk(&mut body).await {
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert!(
        text.starts_with("data: {\"a\":1}\n\ndata: {\"error\":"),
        "{text}"
    );
    assert!(!text.contains("half"), "a partial event is never relayed");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn completions_stream_too() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let body = json!({"model": "e", "prompt": "hi", "stream": true, "baseten": {"model_id": "m"}});
    let reply = post(&bridge.url("/v1/direct/completions"), body).await;
    let events = reply.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(text.starts_with("Hello from Bridge"), "{text}");
}

#[tokio::test]
async fn heartbeats_fill_engine_silence_only_when_configured() {
    for heartbeat in [true, false] {
        let (engine, slot) = controlled_engine().await;
        let mut config = one_model(&engine.server.base());
        if heartbeat {
            config.push_str("heartbeat_ms = 200\n");
        }
        let bridge = Bridge::start(&config).await;
        let response = open(&bridge.url("/v1/direct/chat/completions"), stream_request()).await;
        let tx = slot.lock().unwrap().take().unwrap();
        let feeder = tokio::spawn(async move {
            // A long time to first token, then the answer.
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            tx.send(Ok(Bytes::from_static(
                b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
            )))
            .await
            .unwrap();
        });
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await {
            text.extend_from_slice(&chunk);
        }
        feeder.await.unwrap();
        let text = String::from_utf8(text).unwrap();
        let pings = text.matches(": ping\n\n").count();
        if heartbeat {
            assert!(
                pings >= 2,
                "expected pings during 700 ms of silence: {text:?}"
            );
            assert!(
                text.ends_with(": ping\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n"),
                "{text:?}"
            );
        } else {
            assert_eq!(pings, 0, "heartbeats are off by default: {text:?}");
        }
    }
}

//! What operators see: exact `/metrics` counts after a known set of requests, token usage
//! counted for streams whose client did not ask for it, and the request log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-observe-secret-1234";

fn config(engine: &Running) -> String {
    format!(
        "[[auth.keys]]\nname = \"team\"\nkey = \"{KEY}\"\n{}",
        one_model(&engine.base())
    )
}

async fn scrape(bridge: &Running) -> String {
    let reply = get(&bridge.url("/metrics"), &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    reply.text()
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_every_request_exactly() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&config(&engine)).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let auth = [("authorization", "Bearer sk-observe-secret-1234")];
    for _ in 0..2 {
        assert_eq!(post_with(&url, chat("m"), &auth).await.status, 200);
    }
    let mut stream = chat("m");
    stream["stream"] = json!(true);
    let streamed = post_with(&url, stream.clone(), &auth).await;
    assert!(
        !streamed.text().contains("usage"),
        "the client did not ask for usage: {}",
        streamed.text()
    );
    let mut failing = chat("m");
    failing["simulate"] = json!({"status": 500});
    assert_eq!(post_with(&url, failing, &auth).await.status, 500);
    assert_eq!(post_with(&url, chat("nope"), &auth).await.status, 404);
    assert_eq!(
        post_with(&url, chat("m"), &[("authorization", "Bearer wrong")])
            .await
            .status,
        401
    );
    // A client that leaves a slow stream after its first event.
    stream["simulate"] = json!({"gap_ms": 300});
    let response = open_with(&url, stream, &auth).await;
    let mut body = response.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    drop(body);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = scrape(&bridge).await;
    let m = r#"model="m",deployment="d1""#;
    let chat_m = format!(r#"route="chat/completions",{m}"#);
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_requests_total{{{chat_m},key="team",status="2xx"}}"#)
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_requests_total{{{chat_m},key="team",status="5xx"}}"#)
        ),
        1.0
    );
    let unrouted = r#"route="chat/completions",model="",deployment="""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_requests_total{{{unrouted},key="team",status="4xx"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_requests_total{{{unrouted},key="-",status="4xx"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_request_duration_seconds_count{{{chat_m}}}"#)
        ),
        5.0
    );
    assert_eq!(
        value(&text, &format!("bridge_requests_in_flight{{{m}}}")),
        0.0
    );
    // Two streams saw a first event; the whole one had 9 events, so 8 gaps.
    assert_eq!(
        value(
            &text,
            &format!("bridge_time_to_first_token_seconds_count{{{m}}}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            &format!("bridge_inter_token_latency_seconds_count{{{m}}}")
        ),
        8.0
    );
    // The simulator reports 1 prompt and 8 completion tokens per answer: two JSON answers and
    // one stream, whose usage Bridge asked for and kept from the client.
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_prompt_tokens_total{{{m},key="team"}}"#)
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_completion_tokens_total{{{m},key="team"}}"#)
        ),
        24.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_upstream_errors_total{{{m},reason="5xx"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"bridge_upstream_errors_total{{{m},reason="connect"}}"#)
        ),
        0.0
    );
    assert_eq!(
        value(&text, &format!("bridge_client_cancellations_total{{{m}}}")),
        1.0
    );
    assert_eq!(value(&text, &format!("bridge_retries_total{{{m}}}")), 0.0);
    assert!(!text.contains(KEY), "the key leaked into /metrics");
}

#[tokio::test]
async fn usage_injection_can_be_turned_off_per_deployment() {
    let engine = Capture::start(|_| async {
        sse_response(full_body("data: {\"choices\":[]}\n\ndata: [DONE]\n\n"))
    })
    .await;
    let config = format!("{}inject_usage = false\n", one_model(&engine.server.base()));
    let bridge = Bridge::start(&config).await;
    let mut stream = chat("m");
    stream["stream"] = json!(true);
    post(&bridge.url("/v1/direct/chat/completions"), stream.clone()).await;
    assert!(engine.last().json().get("stream_options").is_none());
    // On by default: the engine is asked for usage; a client's own stream_options are kept.
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    post(&bridge.url("/v1/direct/chat/completions"), stream.clone()).await;
    assert_eq!(
        engine.last().json()["stream_options"],
        json!({"include_usage": true})
    );
    stream["stream_options"] = json!({"include_usage": false});
    post(&bridge.url("/v1/direct/chat/completions"), stream).await;
    assert_eq!(
        engine.last().json()["stream_options"],
        json!({"include_usage": false})
    );
}

#[tokio::test]
async fn each_request_writes_one_log_line_without_the_key() {
    let engine = Sim::start().await;
    let mut bridge = BridgeProcess::start(
        "logs",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n{}",
            config(&engine)
        ),
        true,
    );
    let base = bridge.base.clone();
    let url = format!("{base}/v1/direct/chat/completions");
    let auth = [
        ("authorization", "Bearer sk-observe-secret-1234"),
        ("x-request-id", "req-log-1"),
    ];
    let mut stream = chat("m");
    stream["stream"] = json!(true);
    stream["messages"] = json!([{"role": "user", "content": "a secret prompt"}]);
    assert_eq!(post_with(&url, stream, &auth).await.status, 200);
    bridge.terminate();
    let mut logs = String::new();
    bridge
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    bridge.child.wait().unwrap();

    assert!(!logs.contains(KEY), "the key is in the logs:\n{logs}");
    assert!(
        !logs.contains("a secret prompt"),
        "the prompt is in the logs:\n{logs}"
    );
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &Value| v["target"] == "bridge::request")
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["request_id"], "req-log-1");
    assert_eq!(fields["key"], "team");
    assert_eq!(fields["model"], "m");
    assert_eq!(fields["deployment"], "d1");
    assert_eq!(fields["replica"], engine.base());
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["cancelled"], false);
    // The simulator counts the words of the messages' JSON: `[{..."a`, `secret`, `prompt"}]`.
    assert_eq!(fields["prompt_tokens"], 3);
    assert_eq!(fields["completion_tokens"], 8);
    assert!(fields["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(fields["ttft_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn responses_carry_bridges_own_time() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let mut slow = chat("m");
    slow["simulate"] = json!({"delay_ms": 300});
    for reply in [post(&url, slow).await, post(&url, chat("unknown")).await] {
        let overhead: u64 = reply.headers["x-bridge-overhead-us"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // The engine's 300 ms are not Bridge's: its own share is far below them.
        assert!(overhead < 300_000, "{overhead} µs");
    }
}

#[tokio::test]
async fn metrics_can_be_kept_off_the_client_listener() {
    let engine = Sim::start().await;
    let config = format!("[server]\nmetrics = false\n{}", one_model(&engine.base()));
    let bridge = Bridge::start(&config).await;
    let reply = get(&bridge.url("/metrics"), &[]).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error()["code"], "unknown_route");
}

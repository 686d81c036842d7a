//! Hostile clients: every kind of bad request gets a clear 4xx (or a closed connection for a
//! client too slow to send its headers), nothing reaches an engine it should not, and the
//! process keeps serving: each case is followed by a good request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const URL: &str = "/v1/direct/chat/completions";

async fn setup() -> (Capture, Running) {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let config = format!(
        "[server]\nmax_request_bytes = 1048576\nheader_read_timeout_ms = 300\n{}",
        one_model(&engine.server.base())
    );
    (engine, Bridge::start(&config).await)
}

async fn still_serving(bridge: &Running) {
    let good = post(&bridge.url(URL), chat("m")).await;
    assert_eq!(good.status, 200, "Bridge stopped serving: {}", good.text());
}

fn with_baseten(baseten: Value) -> Bytes {
    Bytes::from(json!({"model": "x", "messages": [], "baseten": baseten}).to_string())
}

#[tokio::test]
async fn every_bad_body_is_a_4xx_naming_the_problem() {
    let (engine, bridge) = setup().await;
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = Bytes::from(format!(
        "{{\"model\":\"x\",\"baseten\":{{\"model_id\":\"m\"}},\"a\":{deep}}}"
    ));
    let long = "x".repeat(10_000);
    let cases: Vec<(&str, Bytes, u16, Option<&str>)> = vec![
        ("empty body", Bytes::new(), 400, None),
        (
            "truncated JSON",
            Bytes::from_static(b"{\"model\": \"x\", \"baseten\": {"),
            400,
            None,
        ),
        (
            "non-object JSON",
            Bytes::from_static(b"[1, 2, 3]"),
            400,
            None,
        ),
        (
            "invalid UTF-8",
            Bytes::from_static(b"{\"model\": \"\xc3\x28\"}"),
            400,
            None,
        ),
        ("nested 100,000 deep", deep_object, 400, None),
        (
            "duplicate baseten",
            Bytes::from_static(
                b"{\"baseten\": {\"model_id\": \"m\"}, \"baseten\": {\"model_id\": \"evil\"}}",
            ),
            400,
            Some("baseten"),
        ),
        (
            "baseten null",
            with_baseten(Value::Null),
            400,
            Some("baseten"),
        ),
        (
            "baseten boolean",
            with_baseten(json!(true)),
            400,
            Some("baseten"),
        ),
        (
            "baseten number",
            with_baseten(json!(1)),
            400,
            Some("baseten"),
        ),
        (
            "baseten string",
            with_baseten(json!("m")),
            400,
            Some("baseten"),
        ),
        (
            "baseten array",
            with_baseten(json!(["m"])),
            400,
            Some("baseten"),
        ),
        (
            "model_id missing",
            with_baseten(json!({})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "model_id number",
            with_baseten(json!({"model_id": 7})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "model_id null",
            with_baseten(json!({"model_id": null})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "model_id object",
            with_baseten(json!({"model_id": {}})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "model_id absurdly long",
            with_baseten(json!({"model_id": long})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "model_id empty",
            with_baseten(json!({"model_id": ""})),
            400,
            Some("baseten.model_id"),
        ),
        (
            "deployment_id number",
            with_baseten(json!({"model_id": "m", "deployment_id": 3})),
            400,
            Some("baseten.deployment_id"),
        ),
        (
            "deployment_id array",
            with_baseten(json!({"model_id": "m", "deployment_id": []})),
            400,
            Some("baseten.deployment_id"),
        ),
        (
            "deployment_id absurdly long",
            with_baseten(json!({"model_id": "m", "deployment_id": long})),
            400,
            Some("baseten.deployment_id"),
        ),
        // Nothing in a request chooses where it goes beyond the configured ids.
        (
            "a URL as model_id",
            with_baseten(json!({"model_id": "http://169.254.169.254/latest"})),
            404,
            Some("baseten.model_id"),
        ),
        (
            "a path as deployment_id",
            with_baseten(json!({"model_id": "m", "deployment_id": "../../admin"})),
            404,
            Some("baseten.deployment_id"),
        ),
        (
            "a URL in the model name form",
            Bytes::from_static(b"{\"model\": \"baseten/http:/evil.example/v1\"}"),
            404,
            Some("model"),
        ),
    ];
    for (name, body, status, param) in cases {
        let reply = send(
            Method::POST,
            &bridge.url(URL),
            body,
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        let error = reply.error();
        assert_eq!(error["param"].as_str(), param, "{name}: {error}");
        assert!(
            error["message"].as_str().unwrap().len() > 10,
            "{name}: {error}"
        );
        assert_eq!(reply.headers["x-should-retry"], "false", "{name}");
        still_serving(&bridge).await;
    }
    let wrong_type = send(
        Method::POST,
        &bridge.url(URL),
        Bytes::from_static(b"{}"),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(wrong_type.error()["code"], "unsupported_media_type");
    // Only the good requests reached the engine.
    assert!(engine
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.json()["baseten"].is_null()));
    still_serving(&bridge).await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let (_engine, bridge) = setup().await;
    let names: Vec<(String, String)> = (0..150).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = names
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let reply = post_with(&bridge.url(URL), chat("m"), &many).await;
    assert_eq!(reply.status, 431);
    assert_eq!(reply.error()["code"], "request_headers_too_large");
    let big = "v".repeat(70_000);
    let reply = post_with(&bridge.url(URL), chat("m"), &[("x-big", &big)]).await;
    assert_eq!(reply.status, 431, "{}", reply.text());
    still_serving(&bridge).await;
}

/// Reads from `stream` until `want` responses' heads have arrived or the peer closes.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str, count: usize) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        while String::from_utf8_lossy(&buf).matches(needle).count() < count {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer");
    String::from_utf8_lossy(&buf).into_owned()
}

fn request_bytes(version: &str, extra: &str) -> String {
    let body = chat("m").to_string();
    format!(
        "POST {URL} {version}\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn http_1_0_pipelining_and_expect_continue_are_served() {
    let (_engine, bridge) = setup().await;
    // HTTP/1.0: answered, then the connection closes.
    let mut stream = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    stream
        .write_all(request_bytes("HTTP/1.0", "").as_bytes())
        .await
        .unwrap();
    let answer = read_until(&mut stream, "\"ok\":true", 1).await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    // Pipelined: two requests in one write, two answers in order.
    let mut stream = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    let two =
        request_bytes("HTTP/1.1", "") + &request_bytes("HTTP/1.1", "x-request-id: second\r\n");
    stream.write_all(two.as_bytes()).await.unwrap();
    let answers = read_until(&mut stream, "\"ok\":true", 2).await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    assert!(answers.find("x-request-id: second").is_some(), "{answers}");
    // Expect: 100-continue: the interim answer, then the real one once the body is sent.
    let body = chat("m").to_string();
    let head = format!(
        "POST {URL} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut stream, "100 Continue", 1).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(body.as_bytes()).await.unwrap();
    assert!(read_until(&mut stream, "\"ok\":true", 1)
        .await
        .contains("HTTP/1.1 200"));
    still_serving(&bridge).await;
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_cut_off() {
    let (_engine, bridge) = setup().await;
    let mut stream = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The rest never comes: past header_read_timeout_ms (300) the connection is closed.
    let closed = async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("a slow-loris connection stayed open");
    still_serving(&bridge).await;
}

#[tokio::test]
async fn the_client_cannot_choose_the_upstream_host_or_path() {
    let (engine, bridge) = setup().await;
    // Absolute-form target and a forged Host: the configured replica is still the only target.
    let body = chat("m").to_string();
    let request = format!(
        "POST http://evil.example/v1/direct/chat/completions HTTP/1.1\r\nhost: evil.example\r\nx-forwarded-host: evil.example\r\nx-forwarded-for: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(bridge.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = engine.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["host"], engine.server.addr.to_string());
    for forged in ["x-forwarded-host", "x-forwarded-for", "forwarded"] {
        assert!(
            seen.headers.get(forged).is_none(),
            "{forged} reached the engine"
        );
    }
    let traversal = post(
        &bridge.url("/v1/direct/../../admin/chat/completions"),
        chat("m"),
    )
    .await;
    assert_eq!(traversal.status, 404);
    still_serving(&bridge).await;
}

//! Forwarding fidelity: the engine sees exactly the client's body minus `baseten`, the right
//! headers and none of the client's credentials; the client sees the engine's answer untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn engine_receives_the_body_byte_for_byte_minus_baseten() {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    // Odd spacing, unknown fields, unicode escapes and number formats must all survive as sent.
    let sent = "{ \"model\" : \"org/Model-7B\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 😀\"}],\n\
                \"baseten\": {\"model_id\": \"m\"} , \"top_k\": 5, \"temperature\": 1.50e0,\
                \"chat_template_kwargs\":{\"enable_thinking\":false},\"tools\":[]}";
    let want = "{ \"model\" : \"org/Model-7B\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 😀\"}] , \
                \"top_k\": 5, \"temperature\": 1.50e0,\"chat_template_kwargs\":{\"enable_thinking\":false},\"tools\":[]}";
    let reply = send(
        Method::POST,
        &bridge.url("/v1/direct/chat/completions"),
        Bytes::from(sent),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = engine.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(std::str::from_utf8(&seen.body).unwrap(), want);
    assert_eq!(
        seen.headers["content-length"],
        seen.body.len().to_string().as_str()
    );
}

#[tokio::test]
async fn credentials_and_hop_by_hop_headers_stay_behind() {
    let dir = std::env::temp_dir().join(format!("bridge-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("engine-key");
    std::fs::write(&key_file, "sk-engine\n").unwrap();
    let engine = Capture::json(200, json!({})).await;
    let config = format!(
        "[[auth.keys]]\nname = \"team\"\nkey = \"sk-client\"\n{}api_key_file = {:?}\n",
        one_model(&engine.server.base()),
        key_file.display().to_string()
    );
    let bridge = Bridge::start(&config).await;
    let headers = [
        ("authorization", "Bearer sk-client"),
        ("api-key", "sk-client"),
        ("x-api-key", "sk-client"),
        ("cookie", "session=1"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("accept-encoding", "gzip, deflate"),
        ("x-stainless-retry-count", "0"),
        ("user-agent", "OpenAI/Python 3.57.0"),
    ];
    let reply = post_with(
        &bridge.url("/v1/direct/chat/completions"),
        chat("m"),
        &headers,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = engine.last().headers;
    assert_eq!(seen["authorization"], "Bearer sk-engine");
    for gone in ["api-key", "x-api-key", "cookie", "x-hop"] {
        assert!(!seen.contains_key(gone), "{gone} was forwarded");
    }
    let all: String = seen.iter().map(|(k, v)| format!("{k}: {v:?}\n")).collect();
    assert!(
        !all.contains("sk-client"),
        "client key reached the engine:\n{all}"
    );
    assert_eq!(seen["accept-encoding"], "identity");
    assert_eq!(seen["host"], engine.server.addr.to_string().as_str());
    assert_eq!(seen["x-stainless-retry-count"], "0");
    assert_eq!(seen["user-agent"], "OpenAI/Python 3.57.0");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_sdks_headers_reach_the_engine_once_unless_connection_names_them() {
    let engine = Capture::json(200, json!({})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let url = bridge.url("/v1/direct/chat/completions");
    // The Python SDK's own casing, and fetch's two.
    let sdk = [
        ("Accept", "application/json"),
        ("User-Agent", "OpenAI/Python 1.99.0"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Retry-Count", "1"),
        ("accept-language", "*"),
        ("sec-fetch-mode", "cors"),
    ];
    let reply = post_with(&url, chat("m"), &sdk).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = engine.last().headers;
    for (name, value) in sdk {
        let all: Vec<_> = seen.get_all(name).iter().collect();
        assert_eq!(all, [value], "{name}");
    }
    let mut listed = sdk.to_vec();
    listed.push(("connection", "keep-alive, User-Agent"));
    let reply = post_with(&url, chat("m"), &listed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = engine.last().headers;
    assert!(
        !seen.contains_key("user-agent"),
        "a hop-by-hop header was forwarded"
    );
    assert_eq!(seen["x-stainless-os"], "Linux");
}

#[tokio::test]
async fn request_id_is_kept_or_made_and_travels_both_ways() {
    let engine = Capture::json(200, json!({})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let given = post_with(&url, chat("m"), &[("x-request-id", "req-123")]).await;
    assert_eq!(given.headers["x-request-id"], "req-123");
    assert_eq!(engine.last().headers["x-request-id"], "req-123");

    let made = post(&url, chat("m")).await;
    let id = made.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(engine.last().headers["x-request-id"], id.as_str());
    let other = post(&url, chat("m")).await;
    assert_ne!(other.headers["x-request-id"], id.as_str(), "ids are unique");

    let absurd = "x".repeat(500);
    let replaced = post_with(&url, chat("m"), &[("x-request-id", &absurd)]).await;
    assert_eq!(replaced.headers["x-request-id"].len(), 32);
}

#[tokio::test]
async fn engine_answer_is_relayed_untouched() {
    let body = r#"{"id":"x","object":"chat.completion","choices":[{"message":{"reasoning_content":"r"}}],"stop_reason":null,"prompt_logprobs":null}"#;
    let engine = Capture::start(move |_| async move {
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("x-engine-info", "kept")
            .header("x-request-id", "engine-own-id")
            .header("keep-alive", "timeout=5")
            .body(full_body(body))
            .unwrap()
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let reply = post_with(
        &bridge.url("/v1/chat/completions"),
        chat("m"),
        &[("x-request-id", "mine")],
    )
    .await;
    assert_eq!(reply.text(), body);
    assert_eq!(reply.headers["x-engine-info"], "kept");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.headers["x-request-id"], "mine",
        "Bridge's id wins over the engine's"
    );
    assert!(!reply.headers.contains_key("keep-alive"));
}

#[tokio::test]
async fn large_bodies_are_forwarded_whole() {
    let engine = Capture::json(200, json!({})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let prompt = "é".repeat(4 << 20);
    let body = json!({"model": "x", "messages": [{"role": "user", "content": prompt}], "baseten": {"model_id": "m"}});
    let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
    assert_eq!(reply.status, 200);
    let seen = engine.last().json();
    assert_eq!(
        seen["messages"][0]["content"].as_str().unwrap().len(),
        8 << 20
    );
    assert!(seen.get("baseten").is_none());
}

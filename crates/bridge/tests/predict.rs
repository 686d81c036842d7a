//! The predict adapter over real sockets: the simulator's predict mode (string, object and
//! plain-text answers; raw streams cut inside characters; SSE) and a capturing model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

/// One model `p` whose production deployment is the predict URL `url`, plus `extra` TOML.
fn predict_model(url: &str, extra: &str) -> String {
    format!(
        "[[models]]\nid = \"p\"\n[[models.deployments]]\nid = \"v1\"\napi = \"predict\"\nreplicas = [\"{url}\"]\n{extra}"
    )
}

fn expected(input: &str) -> String {
    format!("You said: {input}. Ünïcödé ✓ 👋🏽")
}

fn ask(text: &str) -> Value {
    json!({"model": "free-form", "messages": [{"role": "user", "content": text}],
        "baseten": {"model_id": "p"}})
}

/// The content deltas of a chat stream, joined, and the parsed chunks.
fn deltas(reply: &Reply) -> (String, Vec<Value>) {
    let events = reply.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.text()
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks)
}

#[tokio::test]
async fn string_object_and_plain_text_answers_become_chat_completions() {
    let engine = Sim::start().await;
    for shape in ["", "/object", "/text"] {
        let url = engine.url(&format!("/predict{shape}"));
        let bridge = Bridge::start(&predict_model(&url, "")).await;
        let reply = post(&bridge.url("/v1/direct/chat/completions"), ask("héllo")).await;
        assert_eq!(reply.status, 200, "{shape}: {}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["model"], "free-form", "model as the client sent it");
        assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(answer["created"].as_u64().unwrap() > 0);
        let choice = &answer["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], expected("héllo"), "{shape}");
        assert_eq!(choice["finish_reason"], "stop");
        let usage = &answer["usage"];
        if shape == "/object" {
            assert_eq!(usage["total_tokens"], 8, "the model's own usage is relayed");
        } else {
            assert_eq!(
                usage,
                &json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
            );
        }
    }
}

#[tokio::test]
async fn raw_streams_cut_inside_characters_arrive_whole() {
    let engine = Sim::start().await;
    for shape in ["", "/text", "/sse", "/object"] {
        let bridge =
            Bridge::start(&predict_model(&engine.url(&format!("/predict{shape}")), "")).await;
        let mut body = ask("🙂 emoji");
        body["stream"] = json!(true);
        let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let (text, chunks) = deltas(&reply);
        assert_eq!(text, expected("🙂 emoji"), "{shape}");
        assert!(!text.contains('\u{fffd}'));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(
            chunks.len() > 3,
            "{shape}: deltas are forwarded as they come, not collected"
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(
            last.get("usage").is_none(),
            "no usage field unless asked for"
        );
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "free-form");
            assert_eq!(chunk["id"], chunks[0]["id"]);
        }
    }
}

#[tokio::test]
async fn include_usage_adds_the_usage_chunk() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&predict_model(&engine.url("/predict"), "")).await;
    let mut body = ask("x");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (_, chunks) = deltas(&post(&bridge.url("/v1/direct/chat/completions"), body).await);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 0);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn completions_work_with_a_prompt() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&predict_model(&engine.url("/predict"), "")).await;
    let body = json!({"model": "m", "prompt": "abc", "baseten": {"model_id": "p"}});
    let answer = post(&bridge.url("/v1/direct/completions"), body.clone())
        .await
        .json();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], expected("abc"));
    let mut streaming = body;
    streaming["stream"] = json!(true);
    let reply = post(&bridge.url("/v1/direct/completions"), streaming).await;
    let events = reply.events();
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, expected("abc"));
}

#[tokio::test]
async fn the_model_gets_the_translated_body_with_renamed_fields() {
    let model = Capture::json(200, json!({"generated_text": "ok"})).await;
    let config = predict_model(
        &model.server.url("/predict"),
        "[models.deployments.predict]\noutput_key = \"generated_text\"\nrename = { max_tokens = \"max_new_tokens\" }\n",
    );
    let bridge = Bridge::start(&config).await;
    let mut body = ask("hi");
    body["max_tokens"] = json!(12);
    body["temperature"] = json!(0.2);
    body["seed"] = json!(7);
    let reply = post_with(
        &bridge.url("/v1/direct/chat/completions"),
        body,
        &[("authorization", "Bearer client-key")],
    )
    .await;
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "ok");
    let seen = model.last();
    assert_eq!(seen.path, "/predict");
    assert_eq!(
        seen.json(),
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": false,
            "max_new_tokens": 12, "temperature": 0.2, "seed": 7})
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "the client's key stays behind"
    );
}

#[tokio::test]
async fn unsupported_parameters_are_400_and_never_reach_the_model() {
    let model = Capture::json(200, json!("never")).await;
    let bridge = Bridge::start(&predict_model(&model.server.url("/predict"), "")).await;
    for (field, value) in [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("n", json!(3)),
        ("logprobs", json!(true)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ),
    ] {
        let mut body = ask("hi");
        body[field] = value;
        let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.headers["x-should-retry"], "false");
        let error = reply.error();
        assert_eq!(error["param"], field);
        assert_eq!(error["code"], "unsupported_parameter");
    }
    let embeddings = json!({"model": "m", "input": "x", "baseten": {"model_id": "p"}});
    let reply = post(&bridge.url("/v1/direct/embeddings"), embeddings).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error()["code"], "unsupported_endpoint");
    assert_eq!(model.count(), 0);
}

#[tokio::test]
async fn model_errors_and_broken_streams_are_openai_errors() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&predict_model(&engine.url("/predict/error"), "")).await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), ask("x")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.error()["message"], "simulated model failure");

    // A gap lets the first pieces reach Bridge before the model crashes.
    let slow = Sim::start_with(bridge::sim::SimConfig {
        gap: std::time::Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let bridge = Bridge::start(&predict_model(&slow.url("/predict/break"), "")).await;
    let mut body = ask("x");
    body["stream"] = json!(true);
    let reply = post(&bridge.url("/v1/direct/chat/completions"), body).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        error["error"]["code"],
        "upstream_stream_broken",
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn the_previous_bridges_url_form_routes_to_production() {
    let engine = Sim::start().await;
    let config = format!(
        "{}[[models]]\nid = \"chat\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"{}\"]\nserved_model = \"engine-name\"\nhealth_path = \"\"\n",
        predict_model(&engine.url("/predict"), ""),
        engine.base()
    );
    let bridge = Bridge::start(&config).await;
    let body = json!({"model": "whatever", "messages": [{"role": "user", "content": "yo"}]});
    let reply = post(&bridge.url("/p/v1/chat/completions"), body.clone()).await;
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        expected("yo")
    );
    // An OpenAI deployment gets its own model name in place of the client's free-form one.
    let reply = post(&bridge.url("/chat/v1/chat/completions"), body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model"], "engine-name");
    let completion = json!({"model": "x", "prompt": "hey"});
    let reply = post(&bridge.url("/p/v1/completions"), completion).await;
    assert_eq!(reply.json()["choices"][0]["text"], expected("hey"));
    let missing = post(&bridge.url("/nope/v1/chat/completions"), body).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error()["code"], "model_not_found");
}

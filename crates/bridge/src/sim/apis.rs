//! The simulator's other APIs, in the shapes vLLM and llama-server give them: Anthropic's
//! Messages API, rerank and score, and tokenize, detokenize, pooling and classify at the server
//! root (the Responses API is in [`super::responses_api`]). The same `simulate` controls apply: `status`, `delay_ms`, `fail_after`, `error_after`,
//! `no_done` (no terminal event), `chunks`, `gap_ms`, `reply`.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{json_response, now, split, stream_response, SimBody, SimConfig, Step};

pub(super) fn openai_error(status: u16, message: &str, param: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": status.to_string()}})
}

fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

pub(super) fn hex_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", fastrand::u128(..))
}

/// Tokens of a text, as this simulator counts them: its words.
pub(super) fn words(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Null => 0,
        other => other.to_string().split_whitespace().count() as u64,
    }
}

/// Words of a conversation's text: each message's string content, or its text parts.
fn message_words(messages: &Value) -> u64 {
    let text = |content: &Value| match content {
        Value::String(s) => words(&Value::String(s.clone())),
        Value::Array(parts) => parts.iter().map(|p| words(&p["text"])).sum(),
        _ => 0,
    };
    messages
        .as_array()
        .map_or(0, |m| m.iter().map(|m| text(&m["content"])).sum())
}

/// The reply for `body`, split for streaming, as the `simulate` object says.
pub(super) fn pieces(config: &SimConfig, body: &Value) -> Vec<String> {
    let sim = &body["simulate"];
    let reply = sim["reply"]
        .as_str()
        .map_or_else(|| super::default_reply(&config.model), str::to_string);
    let chunks = sim["chunks"].as_u64().map_or(config.chunks, |c| c as usize);
    split(&reply, chunks)
}

pub(super) fn gap(config: &SimConfig, body: &Value) -> Duration {
    body["simulate"]["gap_ms"]
        .as_u64()
        .map_or(config.gap, Duration::from_millis)
}

pub(super) fn typed(kind: &str, data: &Value) -> Step {
    Step::Send(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))
}

/// `POST messages` (Anthropic).
pub(super) async fn messages(config: &SimConfig, body: &Value) -> Response<SimBody> {
    let sim = &body["simulate"];
    if let Some(status) = sim["status"].as_u64() {
        let message = sim["message"].as_str().unwrap_or("simulated engine error");
        let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::BAD_REQUEST);
        let kind = if status.is_server_error() {
            "api_error"
        } else {
            "invalid_request_error"
        };
        return json_response(status, &anthropic_error(kind, message));
    }
    if body["max_tokens"].as_u64().is_none() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &anthropic_error("invalid_request_error", "max_tokens: Field required"),
        );
    }
    let pieces = pieces(config, body);
    let text = pieces.concat();
    let input_tokens = message_words(&body["messages"]) + words(&body["system"]);
    let output_tokens = pieces.len() as u64;
    let id = hex_id("msg");
    let model = body["model"].as_str().unwrap_or(&config.model).to_string();
    // Every field the published schema requires, null where the API sends null.
    let message = |content: Value, stop: Value, output: u64| {
        json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "stop_details": null, "container": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "cache_creation": null, "inference_geo": null, "output_tokens_details": null,
                "server_tool_use": null, "service_tier": "standard"}})
    };
    if body["stream"] != true {
        let content = json!([{"type": "text", "text": text, "citations": null}]);
        return json_response(
            StatusCode::OK,
            &message(content, json!("end_turn"), output_tokens),
        );
    }
    let event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        typed(kind, &data)
    };
    let mut plan = vec![
        event(
            "message_start",
            json!({"message": message(json!([]), Value::Null, 1)}),
        ),
        event(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": "", "citations": null}}),
        ),
        event("ping", json!({})),
    ];
    for (i, piece) in pieces.iter().enumerate() {
        if sim["fail_after"].as_u64() == Some(i as u64) {
            plan.push(Step::Abort);
            return stream_response(plan, gap(config, body));
        }
        if sim["error_after"].as_u64() == Some(i as u64) {
            plan.push(typed(
                "error",
                &anthropic_error("api_error", "simulated in-band error"),
            ));
            return stream_response(plan, gap(config, body));
        }
        plan.push(event(
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    plan.push(event("content_block_stop", json!({"index": 0})));
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "output_tokens_details": null, "server_tool_use": null});
    plan.push(event(
        "message_delta",
        json!({"delta": {"stop_reason": "end_turn", "stop_sequence": null, "stop_details": null, "container": null}, "usage": usage}),
    ));
    if sim["no_done"] != true {
        plan.push(event("message_stop", json!({})));
    }
    stream_response(plan, gap(config, body))
}

/// `POST messages/count_tokens`.
pub(super) fn count_tokens(body: &Value) -> Response<SimBody> {
    let input_tokens = message_words(&body["messages"]) + words(&body["system"]);
    json_response(StatusCode::OK, &json!({"input_tokens": input_tokens}))
}

/// A relevance score in [0, 1]: shared words over the query's words.
fn relevance(query: &str, document: &str) -> f64 {
    let query: Vec<&str> = query.split_whitespace().collect();
    let shared = query.iter().filter(|w| document.contains(**w)).count();
    shared as f64 / query.len().max(1) as f64
}

/// `POST rerank`.
pub(super) fn rerank(config: &SimConfig, body: &Value) -> Response<SimBody> {
    let query = body["query"].as_str().unwrap_or_default();
    let documents: Vec<&str> = body["documents"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut results: Vec<Value> = documents
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"index": index, "document": {"text": text}, "relevance_score": relevance(query, text)}))
        .collect();
    results.sort_by(|a, b| {
        b["relevance_score"]
            .as_f64()
            .partial_cmp(&a["relevance_score"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if let Some(n) = body["top_n"].as_u64() {
        results.truncate(n as usize);
    }
    let tokens = words(&body["query"]) + words(&body["documents"]);
    json_response(
        StatusCode::OK,
        &json!({"id": hex_id("rerank"), "model": body["model"].as_str().unwrap_or(&config.model),
        "usage": {"total_tokens": tokens}, "results": results}),
    )
}

/// `POST score`.
pub(super) fn score(config: &SimConfig, body: &Value) -> Response<SimBody> {
    let (a, b) = (
        body["text_1"].as_str().unwrap_or_default(),
        body["text_2"].as_str().unwrap_or_default(),
    );
    let tokens = words(&body["text_1"]) + words(&body["text_2"]);
    json_response(
        StatusCode::OK,
        &json!({"id": hex_id("score"), "object": "list", "created": now(),
        "model": body["model"].as_str().unwrap_or(&config.model),
        "data": [{"index": 0, "object": "score", "score": relevance(a, b)}],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// `POST /tokenize` (server root): this simulator's tokens are the text's bytes.
pub(super) fn tokenize(body: &Value) -> Response<SimBody> {
    let text = match &body["prompt"] {
        Value::String(s) => s.clone(),
        _ => body["messages"].to_string(),
    };
    let tokens: Vec<u8> = text.into_bytes();
    json_response(
        StatusCode::OK,
        &json!({"count": tokens.len(), "max_model_len": 8192, "tokens": tokens}),
    )
}

/// `POST /detokenize` (server root).
pub(super) fn detokenize(body: &Value) -> Response<SimBody> {
    let bytes: Vec<u8> = body["tokens"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_u64)
                .map(|t| t as u8)
                .collect()
        })
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({"prompt": String::from_utf8_lossy(&bytes)}),
    )
}

/// `POST /pooling` and `POST /classify` (server root).
pub(super) fn pooling(config: &SimConfig, body: &Value, classify: bool) -> Response<SimBody> {
    let tokens = words(&body["input"]);
    let model = body["model"].as_str().unwrap_or(&config.model);
    let data = if classify {
        let p = (tokens % 10) as f64 / 10.0;
        json!([{"index": 0, "label": if p >= 0.5 { "positive" } else { "negative" }, "probs": [1.0 - p, p], "num_classes": 2}])
    } else {
        json!([{"index": 0, "object": "pooling", "data": [tokens as f64, 1.0, 0.5]}])
    };
    json_response(
        StatusCode::OK,
        &json!({"id": hex_id(if classify { "classify" } else { "pool" }), "object": "list",
        "created": now(), "model": model, "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}}),
    )
}

//! The simulator's Responses API, as vLLM serves it: responses are stored in the memory of the
//! engine that made them (another engine does not have them), for retrieval, deletion,
//! cancellation, their input items, and follow-ups by `previous_response_id`. The same
//! `simulate` controls as the other APIs apply.

use std::collections::HashMap;
use std::sync::Mutex;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::apis::{gap, hex_id, openai_error, pieces, typed, words};
use super::{json_response, now, stream_response, SimBody, SimConfig, Step};

/// Stored responses kept per process (the oldest go first).
const MAX_STORED: usize = 4096;

/// What one simulated engine's Responses API stored, by id: like vLLM's, in the memory of the
/// engine that made the response, so another engine does not have it.
#[derive(Debug, Default)]
pub(super) struct Store {
    inner: Mutex<Stored>,
}

#[derive(Debug, Default)]
struct Stored {
    by_id: HashMap<String, Value>,
    order: std::collections::VecDeque<String>,
}

fn remember(store: &Store, response: &Value) {
    let Ok(mut store) = store.inner.lock() else {
        return;
    };
    let id = response["id"].as_str().unwrap_or_default().to_string();
    if store.order.len() >= MAX_STORED {
        if let Some(old) = store.order.pop_front() {
            store.by_id.remove(&old);
        }
    }
    store.order.push_back(id.clone());
    store.by_id.insert(id, response.clone());
}

fn stored(store: &Store, id: &str) -> Option<Value> {
    store.inner.lock().ok()?.by_id.get(id).cloned()
}

/// `GET` / `DELETE responses/{id}`, `POST responses/{id}/cancel`, `GET …/input_items`: what
/// this engine stored, or its 404.
pub(super) fn stored_route(store: &Store, method: &Method, rest: &str) -> Response<SimBody> {
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(response) = stored(store, id) else {
        let message = format!("Response with id '{id}' not found.");
        return json_response(
            StatusCode::NOT_FOUND,
            &openai_error(404, &message, "response_id"),
        );
    };
    match (method.as_str(), what) {
        ("GET", "") | ("POST", "cancel") => {
            let mut response = response;
            if let Value::Object(map) = &mut response {
                map.remove("input_items");
            }
            json_response(StatusCode::OK, &response)
        }
        ("DELETE", "") => {
            if let Ok(mut store) = store.inner.lock() {
                store.by_id.remove(id);
            }
            json_response(
                StatusCode::OK,
                &json!({"id": id, "object": "response", "deleted": true}),
            )
        }
        ("GET", "input_items") => {
            let items = response["input_items"].clone();
            json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": items, "first_id": items[0]["id"],
                    "last_id": items[0]["id"], "has_more": false}),
            )
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &openai_error(404, "Not Found", "path"),
        ),
    }
}

/// `POST responses`.
pub(super) async fn responses(
    config: &SimConfig,
    store: &Store,
    body: &Value,
) -> Response<SimBody> {
    let sim = &body["simulate"];
    if let Some(status) = sim["status"].as_u64() {
        let message = sim["message"].as_str().unwrap_or("simulated engine error");
        let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::BAD_REQUEST);
        return json_response(status, &openai_error(status.as_u16(), message, "input"));
    }
    let previous = body["previous_response_id"].as_str();
    let mut input_tokens = words(&body["input"]);
    if let Some(id) = previous {
        let Some(earlier) = stored(store, id) else {
            return json_response(
                StatusCode::NOT_FOUND,
                &openai_error(
                    404,
                    &format!("Previous response with id '{id}' not found."),
                    "previous_response_id",
                ),
            );
        };
        // The conversation so far counts as input, as it does on a real engine.
        input_tokens += earlier["usage"]["total_tokens"].as_u64().unwrap_or(0);
    }
    let pieces = pieces(config, body);
    let text = pieces.concat();
    let (id, message_id) = (hex_id("resp"), hex_id("msg"));
    let model = body["model"].as_str().unwrap_or(&config.model).to_string();
    let output_tokens = pieces.len() as u64;
    let message = |status: &str, text: &str| {
        json!({"type": "message", "id": message_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    };
    // `usage` is left out until there is one: the schema has it optional, not nullable.
    let response = |status: &str, output: Value, usage: Option<Value>| {
        let mut response = json!({"id": id, "object": "response", "created_at": now(), "status": status,
            "error": null, "incomplete_details": null, "instructions": body["instructions"],
            "max_output_tokens": body["max_output_tokens"], "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": previous, "reasoning": null,
            "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
            "metadata": {}});
        if let Some(usage) = usage {
            response["usage"] = usage;
        }
        response
    };
    let usage = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens});
    let done = response(
        "completed",
        json!([message("completed", &text)]),
        Some(usage),
    );
    let input = match &body["input"] {
        Value::String(text) => json!([{"type": "message", "id": hex_id("msg"), "role": "user",
            "content": [{"type": "input_text", "text": text}]}]),
        other => other.clone(),
    };
    let mut kept = done.clone();
    kept["input_items"] = input;
    remember(store, &kept);
    if body["stream"] != true {
        return json_response(StatusCode::OK, &done);
    }
    let mut plan = Vec::new();
    let mut seq = 0u64;
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        typed(kind, &data)
    };
    let started = response("in_progress", json!([]), None);
    plan.push(event("response.created", json!({"response": started})));
    plan.push(event("response.in_progress", json!({"response": started})));
    plan.push(event(
        "response.output_item.added",
        json!({"output_index": 0, "item": message("in_progress", "")}),
    ));
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let at = json!({"item_id": message_id, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = at.clone();
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
        v
    };
    plan.push(event(
        "response.content_part.added",
        with(json!({"part": part("")})),
    ));
    for (i, piece) in pieces.iter().enumerate() {
        if sim["fail_after"].as_u64() == Some(i as u64) {
            plan.push(Step::Abort);
            return stream_response(plan, gap(config, body));
        }
        if sim["error_after"].as_u64() == Some(i as u64) {
            plan.push(event("error", json!({"code": "server_error", "message": "simulated in-band error", "param": null})));
            return stream_response(plan, gap(config, body));
        }
        plan.push(event(
            "response.output_text.delta",
            with(json!({"delta": piece, "logprobs": []})),
        ));
    }
    plan.push(event(
        "response.output_text.done",
        with(json!({"text": text, "logprobs": []})),
    ));
    plan.push(event(
        "response.content_part.done",
        with(json!({"part": part(&text)})),
    ));
    plan.push(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": message("completed", &text)}),
    ));
    if sim["no_done"] != true {
        plan.push(event("response.completed", json!({"response": done})));
    }
    stream_response(plan, gap(config, body))
}

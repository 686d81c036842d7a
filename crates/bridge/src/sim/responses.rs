//! Response objects of the simulated engine, following the OpenAI API schema exactly (every
//! required field present, `refusal: null`, `logprobs: null`, a `usage` object) so strict
//! clients and schema validators accept them.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{Kind, Step};

/// What one simulated answer is made of.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
    /// The reply, already split into the pieces a stream sends.
    pub(crate) pieces: Vec<String>,
    pub(crate) prompt_tokens: u64,
}

impl Answer {
    fn text(&self) -> String {
        self.pieces.concat()
    }

    pub(crate) fn usage(&self) -> Value {
        let completion = self.pieces.len() as u64;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    pub(crate) fn chat_completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text(), "refusal": null, "tool_calls": []},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": self.usage(),
        })
    }

    pub(crate) fn text_completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": self.text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": self.usage(),
        })
    }

    /// A streamed chunk. `delta` is `Some(text)` for content, `None` for the final chunk;
    /// `first` adds the assistant role.
    pub(crate) fn chat_chunk(
        &self,
        delta: Option<&str>,
        first: bool,
        with_usage_field: bool,
    ) -> Value {
        let (delta, finish) = match delta {
            Some(text) if first => (json!({"role": "assistant", "content": text}), Value::Null),
            Some(text) => (json!({"content": text}), Value::Null),
            None => (json!({}), json!("stop")),
        };
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage_field {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    pub(crate) fn completion_chunk(&self, text: Option<&str>, with_usage_field: bool) -> Value {
        let finish = if text.is_some() {
            Value::Null
        } else {
            json!("stop")
        };
        let mut chunk = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text.unwrap_or(""), "index": 0, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage_field {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The final usage chunk: `choices` empty, `usage` set.
    pub(crate) fn usage_chunk(&self, object: &str) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage(),
        })
    }
}

/// `POST /embeddings`: one deterministic vector per input, as floats or base64 (the Python SDK
/// asks for base64 by default and decodes it).
pub(crate) fn embeddings(body: &Value, model: &str) -> Value {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        other => vec![other.to_string()],
    };
    let dims = body["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
    let base64 = body["encoding_format"] == "base64";
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += text.split_whitespace().count().max(1) as u64;
            let vector = vector_for(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

/// A unit-length vector derived from the text, so equal inputs embed equally.
fn vector_for(text: &str, dims: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let raw: Vec<f32> = (0..dims)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}

/// A vLLM-style error body: OpenAI envelope with an *integer* code, or the older flat shape.
pub(crate) fn engine_error(status: u16, message: &str, flat: bool) -> Value {
    let kind = match status {
        400 => "BadRequestError",
        404 => "NotFoundError",
        _ => "InternalServerError",
    };
    let inner =
        json!({"object": "error", "message": message, "type": kind, "param": null, "code": status});
    if flat {
        inner
    } else {
        json!({"error": inner})
    }
}

/// The events of one stream, with any requested fault in place.
pub(super) fn stream_plan(
    answer: &Answer,
    kind: Kind,
    include_usage: bool,
    sim: &Value,
) -> Vec<Step> {
    let event = |v: Value| Step::Send(Bytes::from(format!("data: {v}\n\n")));
    let fail_after = sim["fail_after"].as_u64().map(|n| n as usize);
    let error_after = sim["error_after"].as_u64().map(|n| n as usize);
    let mut plan = Vec::new();
    for (i, piece) in answer.pieces.iter().enumerate() {
        if fail_after == Some(i) {
            plan.push(Step::Abort);
            return plan;
        }
        if error_after == Some(i) {
            plan.push(event(engine_error(
                500,
                "simulated in-band error",
                sim["flat_error"] == true,
            )));
            plan.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
            return plan;
        }
        plan.push(event(match kind {
            Kind::Chat => answer.chat_chunk(Some(piece), i == 0, include_usage),
            Kind::Completion => answer.completion_chunk(Some(piece), include_usage),
        }));
    }
    plan.push(event(match kind {
        Kind::Chat => answer.chat_chunk(None, answer.pieces.is_empty(), include_usage),
        Kind::Completion => answer.completion_chunk(None, include_usage),
    }));
    if include_usage {
        let object = if kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        plan.push(event(answer.usage_chunk(object)));
    }
    if sim["no_done"] != true {
        plan.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    plan
}

//! Answer side of the predict adapter: the model's answer as an OpenAI response.
//!
//! A non-streaming answer is a JSON string, a JSON object with the text under `output_key`, or
//! plain text; it becomes a `chat.completion` (or `text_completion`). A streaming answer is
//! adapted chunk by chunk by [`PredictEvents`]; a model that answers a stream request with one
//! JSON answer gets it streamed as a single delta. Model errors (non-2xx) become OpenAI errors
//! with the model's status and message, through the same path as engine errors.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::stream::{tokens, zero_usage, ChunkWriter, PredictEvents};
use super::{Context, Kind};
use crate::config::predict::PredictSettings;
use crate::error::ApiError;
use crate::error::UpstreamFailure;
use crate::observe::record::Record;
use crate::relay::head::{compressed_stream, engine_error, is_compressed, mark_sse};
use crate::relay::lifetime::{EngineBody, TimedOut};
use crate::relay::stream::StreamRelay;
use crate::relay::ResBody;

/// Largest non-streaming answer read from a model (far beyond any sane completion).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Builds the client's response from the model's.
/// `heartbeat`: `: ping` comments on streams after this much silence from the model.
pub async fn relay(
    upstream: Response<EngineBody>,
    context: Context,
    heartbeat: Option<Duration>,
    settings: &PredictSettings,
    record: &mut Record,
) -> Result<Response<ResBody>, ApiError> {
    let (parts, mut body) = upstream.into_parts();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        body.settle();
        return Err(engine_error(parts.status, &parts.headers, body).await);
    }
    if is_compressed(&parts.headers) {
        return Err(compressed_stream());
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let declared_json =
        content_type.starts_with("application/json") || content_type.contains("+json");
    if context.stream && !declared_json {
        let sse = content_type.starts_with("text/event-stream");
        let (adapter, first) = PredictEvents::new(context, sse);
        let stream = StreamRelay::new(body, adapter, first, heartbeat);
        return Ok(sse_response(ResBody::stream(stream)));
    }
    // The budget is held while the answer is in memory (until this returns).
    let (bytes, _budget) = read_answer(&mut body, settings).await.inspect_err(|e| {
        if let Some(why) = e.upstream_failure {
            record.upstream_error(why);
        }
    })?;
    let (text, usage) = answer_text(&bytes, &content_type, &context.output_key)?;
    if let Some((prompt, completion)) = usage.as_ref().and_then(tokens) {
        record.usage(prompt, completion);
    }
    let usage = usage.unwrap_or_else(zero_usage);
    if context.stream {
        let writer = ChunkWriter::new(&context);
        let mut events: VecDeque<Bytes> = writer.role().into_iter().collect();
        if !text.is_empty() {
            events.push_back(writer.content(&text));
        }
        writer.end(context.include_usage, &usage, &mut events);
        let joined: Vec<u8> = events.iter().flat_map(|b| b.iter().copied()).collect();
        return Ok(sse_response(ResBody::full(joined)));
    }
    let mut response = Response::new(ResBody::full(
        completion(&context, &text, usage).to_string(),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn sse_response(body: ResBody) -> Response<ResBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    mark_sse(response.headers_mut());
    response
}

/// The whole answer, bounded in size; the body's idle and total limits apply while reading.
async fn read_answer(
    body: &mut EngineBody,
    settings: &PredictSettings,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError> {
    let mut out = BytesMut::new();
    let mut budget: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if out.len() + data.len() > MAX_ANSWER_BYTES {
                    return Err(ApiError::bad_gateway(format!(
                        "the model's answer is larger than {MAX_ANSWER_BYTES} bytes"
                    ))
                    .with_code("upstream_answer_too_large"));
                }
                take_budget(&mut budget, out.len() + data.len(), settings)?;
                out.extend_from_slice(&data);
            }
            Err(e) if e.is::<TimedOut>() => {
                return Err(
                    ApiError::gateway_timeout(format!("the answer stopped: {e}"))
                        .upstream(UpstreamFailure::Timeout),
                )
            }
            Err(e) => {
                return Err(
                    ApiError::bad_gateway(format!("the model's answer broke off: {e}"))
                        .with_code("upstream_stream_broken")
                        .upstream(UpstreamFailure::Reset),
                )
            }
        }
    }
    Ok((out.freeze(), budget))
}

/// Grows `held` to cover `bytes` of the deployment's buffer budget (in KiB permits), or says
/// why it cannot: the budget is taken by other answers now (503, retry), or this answer alone
/// is larger than all of it (502).
fn take_budget(
    held: &mut Option<OwnedSemaphorePermit>,
    bytes: usize,
    settings: &PredictSettings,
) -> Result<(), ApiError> {
    let need = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    let have = held.as_ref().map_or(0, |h| h.num_permits() as u32);
    if need <= have {
        return Ok(());
    }
    if u64::from(need) * 1024 > settings.buffer_bytes {
        return Err(ApiError::bad_gateway(format!(
            "the model's answer is larger than the deployment's predict.max_buffered_bytes ({} bytes)",
            settings.buffer_bytes
        ))
        .with_code("upstream_answer_too_large"));
    }
    let more = settings
        .buffer
        .clone()
        .try_acquire_many_owned(need - have)
        .map_err(|_| {
            ApiError::busy(format!(
                "the deployment's answers being read take its whole buffer budget \
                 (predict.max_buffered_bytes, {} bytes); retry shortly",
                settings.buffer_bytes
            ))
        })?;
    match held {
        Some(held) => held.merge(more),
        None => *held = Some(more),
    }
    Ok(())
}

/// The text of a whole answer, and the model's own usage if it reported one.
pub fn answer_text(
    bytes: &[u8],
    content_type: &str,
    output_key: &str,
) -> Result<(String, Option<Value>), ApiError> {
    // Never decoded lossily: a model's text reaches the client as it was, or not at all.
    let plain = || {
        let text = std::str::from_utf8(bytes).map_err(|_| ApiError::upstream_invalid_utf8())?;
        Ok((text.to_string(), None))
    };
    if content_type.starts_with("text/") {
        return plain();
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::String(text)) => Ok((text, None)),
        Ok(Value::Object(map)) => {
            let usage = map.get("usage").filter(|u| u.is_object()).cloned();
            match map.get(output_key) {
                Some(Value::String(text)) => Ok((text.clone(), usage)),
                _ => Err(ApiError::bad_gateway(format!(
                    "the model answered a JSON object without a string '{output_key}'; set the deployment's predict.output_key"
                ))
                .with_code("upstream_bad_answer")),
            }
        }
        // A number, an array, or not JSON at all: the body is the text.
        _ => plain(),
    }
}

/// A whole `chat.completion` or `text_completion`.
pub fn completion(context: &Context, text: &str, usage: Value) -> Value {
    let choice = match context.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }),
        Kind::Completion => json!({
            "text": text,
            "index": 0,
            "logprobs": null,
            "finish_reason": "stop",
        }),
    };
    json!({
        "id": context.id,
        "object": context.object(),
        "created": context.created,
        "model": context.model,
        "choices": [choice],
        "usage": usage,
    })
}

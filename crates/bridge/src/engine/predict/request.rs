//! Request side of the predict adapter: check every field of the client's body, then build the
//! predict body `{"messages" | "prompt", "stream", <sampling fields the client set>}`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{uuid_v4, Context, Kind};
use crate::config::predict::{PredictSettings, FORWARDED, SUPPORTED_HINT, UNSUPPORTED};
use crate::error::ApiError;

fn refuse(param: String, what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "'{param}' asks for {what}, which this model does not support: it is served through \
         Bridge's predict adapter, which supports {SUPPORTED_HINT}"
    ))
    .with_param(param)
    .with_code("unsupported_parameter")
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::bad_request(message).with_param(param.to_string())
}

/// Checks `body` and translates it for a predict deployment. Returns the predict body and what
/// the answer needs to know. `default_model` stands in for a missing `model`.
pub fn adapt_request(
    body: &[u8],
    kind: Kind,
    settings: &PredictSettings,
    default_model: &str,
) -> Result<(Bytes, Context), ApiError> {
    let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the request body could not be read: {e}"))
            .with_code("invalid_json")
    })?;
    let input_field = match kind {
        Kind::Chat => "messages",
        Kind::Completion => "prompt",
    };
    let input = map
        .get(input_field)
        .filter(|v| !v.is_null())
        .ok_or_else(|| invalid(input_field, format!("'{input_field}' is required")))?;
    if kind == Kind::Chat {
        check_messages(input)?;
    }
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "'stream' must be a boolean".into())),
    };
    let include_usage = match map.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(invalid(
                    "stream_options.include_usage",
                    "'stream_options.include_usage' must be a boolean".into(),
                ))
            }
        },
        Some(_) => {
            return Err(invalid(
                "stream_options",
                "'stream_options' must be an object".into(),
            ))
        }
    };
    let mut out = Map::new();
    out.insert(input_field.to_string(), input.clone());
    out.insert("stream".to_string(), Value::Bool(stream));
    for (key, value) in &map {
        if value.is_null() {
            continue; // null means "not set", as in the OpenAI API
        }
        match key.as_str() {
            "model" | "baseten" | "messages" | "prompt" | "stream" | "stream_options" | "user" => {}
            "n" if value.as_u64() == Some(1) => {}
            "n" => return Err(refuse(key.clone(), "several choices (n > 1)")),
            "logprobs" if value == &Value::Bool(false) || value.as_u64() == Some(0) => {}
            "logprobs" => return Err(refuse(key.clone(), "log probabilities")),
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            "response_format" => {
                return Err(refuse(
                    key.clone(),
                    "structured output (a response_format other than text)",
                ))
            }
            "logit_bias" if value.as_object().is_some_and(Map::is_empty) => {}
            "max_completion_tokens" => {
                if map
                    .get("max_tokens")
                    .is_some_and(|v| !v.is_null() && v != value)
                {
                    return Err(invalid(
                        "max_completion_tokens",
                        "set max_tokens or max_completion_tokens, not both".into(),
                    ));
                }
                out.insert(renamed(settings, "max_tokens"), value.clone());
            }
            field
                if FORWARDED.contains(&field)
                    || settings.extra_fields.iter().any(|f| f == field) =>
            {
                out.insert(renamed(settings, field), value.clone());
            }
            field => {
                return Err(match UNSUPPORTED.iter().find(|(name, _)| *name == field) {
                    Some((_, what)) => refuse(key.clone(), what),
                    None => refuse(key.clone(), "a parameter the adapter does not know"),
                })
            }
        }
    }
    let model = map
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(default_model)
        .to_string();
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    let context = Context {
        kind,
        stream,
        include_usage,
        id: format!("{prefix}-{}", uuid_v4()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model,
        output_key: settings.output_key.clone(),
    };
    let body = serde_json::to_vec(&out).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((Bytes::from(body), context))
}

fn renamed(settings: &PredictSettings, field: &str) -> String {
    settings
        .rename
        .get(field)
        .cloned()
        .unwrap_or_else(|| field.to_string())
}

/// Messages must be objects whose content is text: a string, or text parts only.
fn check_messages(messages: &Value) -> Result<(), ApiError> {
    let Value::Array(list) = messages else {
        return Err(invalid("messages", "'messages' must be an array".into()));
    };
    if list.is_empty() {
        return Err(invalid(
            "messages",
            "'messages' must hold at least one message".into(),
        ));
    }
    for (i, message) in list.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(
                &format!("messages[{i}]"),
                format!("messages[{i}] must be an object"),
            ));
        };
        if message
            .get("tool_calls")
            .is_some_and(|calls| calls.as_array().is_none_or(|a| !a.is_empty()) && !calls.is_null())
        {
            return Err(refuse(format!("messages[{i}].tool_calls"), "tool calling"));
        }
        let Some(Value::Array(parts)) = message.get("content") else {
            continue;
        };
        for (j, part) in parts.iter().enumerate() {
            let param = format!("messages[{i}].content[{j}]");
            match part.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("image_url" | "input_image" | "image") => {
                    return Err(refuse(param, "image input"))
                }
                Some("input_audio" | "audio") => return Err(refuse(param, "audio input")),
                Some("file" | "input_file") => return Err(refuse(param, "file input")),
                Some(other) => return Err(refuse(param, &format!("'{other}' content"))),
                None => return Err(invalid(&param, format!("{param} has no 'type'"))),
            }
        }
    }
    Ok(())
}

//! The predict adapter's contract, as the config sees it: which request fields the adapter
//! forwards, handles or refuses, and a deployment's validated `[predict]` table.
//!
//! The adapter itself is [`crate::engine::predict`]; its field lists live here because
//! validating a deployment's renames and extra fields needs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::file::{PredictConfig, DEFAULT_OUTPUT_KEY, DEFAULT_PREDICT_BUFFERED_BYTES};

/// Sampling fields forwarded when the client sets them (renamed as the deployment says).
pub const FORWARDED: [&str; 7] = [
    "max_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
];

/// Fields Bridge itself reads or answers for; never forwarded as they are.
pub const HANDLED: [&str; 11] = [
    "model",
    "baseten",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "user",
    "n",
    "logprobs",
    "response_format",
    "max_completion_tokens",
];

/// Fields the adapter cannot honour, refused by name with what they ask for.
pub const UNSUPPORTED: [(&str, &str); 13] = [
    ("tools", "tool calling"),
    ("tool_choice", "tool calling"),
    ("parallel_tool_calls", "tool calling"),
    ("functions", "function calling"),
    ("function_call", "function calling"),
    ("logit_bias", "logit bias"),
    ("top_logprobs", "log probabilities"),
    ("audio", "audio output"),
    ("modalities", "output modalities other than text"),
    ("prediction", "predicted outputs"),
    ("echo", "echoing the prompt"),
    ("best_of", "best_of"),
    ("suffix", "suffix"),
];

/// What a client may send to a predict deployment, for error messages.
pub const SUPPORTED_HINT: &str = "model, messages (text content) or prompt, stream, \
stream_options.include_usage, max_tokens (or max_completion_tokens), temperature, top_p, \
presence_penalty, frequency_penalty, stop, seed, user, n = 1, logprobs = false, \
response_format of type text";

/// Whether `field` is one the adapter reads, forwards or refuses by itself (so a deployment
/// cannot list it among its `extra_fields`).
pub fn is_bridge_field(field: &str) -> bool {
    FORWARDED.contains(&field)
        || HANDLED.contains(&field)
        || UNSUPPORTED.iter().any(|(name, _)| *name == field)
}

/// Validated `[models.deployments.predict]`.
#[derive(Debug, Clone)]
pub struct PredictSettings {
    /// Where the text is in an object answer.
    pub output_key: String,
    /// Forwarded field → the name the model expects.
    pub rename: BTreeMap<String, String>,
    /// Fields forwarded as they are, beyond the adapter's own list.
    pub extra_fields: Vec<String>,
    /// The bytes of whole answers the deployment may hold at once, in KiB permits (shared by
    /// all its requests, kept across reloads with the deployment).
    pub buffer: Arc<Semaphore>,
    /// The budget's size in bytes, for messages.
    pub buffer_bytes: u64,
}

/// Validates a deployment's `[predict]` table (absent: defaults).
pub fn settings(config: Option<&PredictConfig>) -> Result<PredictSettings, String> {
    let default = PredictConfig::default();
    let config = config.unwrap_or(&default);
    let output_key = config
        .output_key
        .clone()
        .unwrap_or_else(|| DEFAULT_OUTPUT_KEY.to_string());
    if output_key.is_empty() {
        return Err("predict.output_key must not be empty".into());
    }
    let mut targets = BTreeMap::new();
    for (from, to) in &config.rename {
        if !FORWARDED.contains(&from.as_str()) && !config.extra_fields.contains(from) {
            return Err(format!(
                "predict.rename: '{from}' is not a field the adapter forwards ({})",
                FORWARDED.join(", ")
            ));
        }
        if to.is_empty() {
            return Err(format!(
                "predict.rename: '{from}' is renamed to an empty name"
            ));
        }
        if let Some(other) = targets.insert(to.as_str(), from.as_str()) {
            return Err(format!(
                "predict.rename: '{other}' and '{from}' are both renamed to '{to}'"
            ));
        }
    }
    // A rename onto a field the adapter writes itself, or onto another forwarded field, would
    // overwrite it depending on the client's key order.
    for (from, to) in &config.rename {
        let taken = ["messages", "prompt", "stream"].contains(&to.as_str())
            || (to != from
                && (FORWARDED.contains(&to.as_str()) || config.extra_fields.contains(to))
                && !config.rename.contains_key(to));
        if taken {
            return Err(format!(
                "predict.rename: '{from}' is renamed to '{to}', which the adapter already sends"
            ));
        }
    }
    for field in &config.extra_fields {
        if is_bridge_field(field) {
            return Err(format!(
                "predict.extra_fields: '{field}' is handled by Bridge and cannot be forwarded"
            ));
        }
    }
    let buffer_bytes = config
        .max_buffered_bytes
        .unwrap_or(DEFAULT_PREDICT_BUFFERED_BYTES);
    if buffer_bytes < 1024 || buffer_bytes > u64::from(u32::MAX) * 1024 {
        return Err(format!(
            "predict.max_buffered_bytes must be 1024 to {} (got {buffer_bytes})",
            u64::from(u32::MAX) * 1024
        ));
    }
    Ok(PredictSettings {
        output_key,
        rename: config.rename.clone(),
        extra_fields: config.extra_fields.clone(),
        buffer: Arc::new(Semaphore::new((buffer_bytes / 1024) as usize)),
        buffer_bytes,
    })
}

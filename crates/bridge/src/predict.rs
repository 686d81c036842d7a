//! The predict adapter: OpenAI chat completions and completions for models that only have a
//! plain predict endpoint (JSON in; a JSON string, a JSON object or plain text out; a raw text
//! stream or SSE when streaming).
//!
//! The adapter's feature set is smaller than the OpenAI API's, and it says so: every request
//! field is either forwarded ([`request::FORWARDED`], renamed where the deployment says),
//! handled by Bridge (`model`, `stream_options`, `n = 1`, ...), or refused with a 400 naming
//! it. Nothing is dropped silently.
//!
//! - [`request`]: validate and translate the client's body into the predict body.
//! - [`response`]: the model's answer (or error) as a `chat.completion` / `text_completion`.
//! - [`stream`]: raw or SSE text streams as `chat.completion.chunk` events, as bytes arrive.

pub mod request;
pub mod response;
pub mod stream;

use std::collections::BTreeMap;

use crate::config::PredictConfig;
use crate::registry::PredictSettings;

pub use request::adapt_request;
pub use response::relay;

/// Default key of the text in an object answer.
pub const DEFAULT_OUTPUT_KEY: &str = "output";

/// Which OpenAI route the client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// What the answer needs to know about the request it answers.
#[derive(Debug, Clone)]
pub struct Context {
    pub kind: Kind,
    pub stream: bool,
    /// `stream_options.include_usage`: a final usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// `chatcmpl-<uuid>` or `cmpl-<uuid>`.
    pub id: String,
    pub created: u64,
    /// The `model` the client sent, reported back as it was.
    pub model: String,
    pub output_key: String,
}

impl Context {
    /// The `object` of a whole answer.
    pub fn object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion",
            Kind::Completion => "text_completion",
        }
    }

    /// The `object` of a stream chunk.
    pub fn chunk_object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }
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
        if !request::FORWARDED.contains(&from.as_str()) && !config.extra_fields.contains(from) {
            return Err(format!(
                "predict.rename: '{from}' is not a field the adapter forwards ({})",
                request::FORWARDED.join(", ")
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
                && (request::FORWARDED.contains(&to.as_str()) || config.extra_fields.contains(to))
                && !config.rename.contains_key(to));
        if taken {
            return Err(format!(
                "predict.rename: '{from}' is renamed to '{to}', which the adapter already sends"
            ));
        }
    }
    for field in &config.extra_fields {
        if request::is_bridge_field(field) {
            return Err(format!(
                "predict.extra_fields: '{field}' is handled by Bridge and cannot be forwarded"
            ));
        }
    }
    Ok(PredictSettings {
        output_key,
        rename: config.rename.clone(),
        extra_fields: config.extra_fields.clone(),
    })
}

/// A random (version 4) UUID in its usual text form.
pub fn uuid_v4() -> String {
    let n = fastrand::u128(..);
    // Version 4, variant 10xx.
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;

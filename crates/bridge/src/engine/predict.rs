//! The predict adapter: OpenAI chat completions and completions for models that only have a
//! plain predict endpoint (JSON in; a JSON string, a JSON object or plain text out; a raw text
//! stream or SSE when streaming).
//!
//! The adapter's feature set is smaller than the OpenAI API's, and it says so: every request
//! field is either forwarded ([`FORWARDED`](crate::config::predict::FORWARDED), renamed where the deployment says),
//! handled by Bridge (`model`, `stream_options`, `n = 1`, ...), or refused with a 400 naming
//! it. Nothing is dropped silently.
//!
//! - [`request`]: validate and translate the client's body into the predict body.
//! - [`response`]: the model's answer (or error) as a `chat.completion` / `text_completion`.
//! - [`stream`]: raw or SSE text streams as `chat.completion.chunk` events, as bytes arrive.

pub mod request;
pub mod response;
pub mod stream;

use bytes::Bytes;
use http::Response;

use super::{Engine, Outgoing};
use crate::body::ReqBody;
use crate::config::registry::{Deployment, Endpoint};
use crate::error::ApiError;
use crate::relay::lifetime::EngineBody;
use crate::relay::ResBody;
use crate::stage::exchange::Exchange;
use crate::stage::route::RoutedBody;
use crate::upstream::client::Upstream;

pub use request::adapt_request;
pub use response::relay;

/// A model with only a predict endpoint, reached through the adapter.
#[derive(Debug, Clone, Copy)]
pub struct PredictEngine;

impl Engine for PredictEngine {
    type Plan = Context;

    async fn request(
        &self,
        _upstream: &Upstream,
        ex: &Exchange,
        _routed: &RoutedBody,
        body: &Bytes,
    ) -> Result<Outgoing<Context>, ApiError> {
        let Some(deployment) = ex.deployment.as_deref() else {
            return Err(ApiError::internal("no deployment resolved"));
        };
        let Some(settings) = &deployment.predict else {
            return Err(ApiError::internal(
                "a predict deployment without its settings",
            ));
        };
        let kind = match ex.endpoint {
            Endpoint::ChatCompletions => Kind::Chat,
            Endpoint::Completions => Kind::Completion,
            other => return Err(unsupported(other, deployment)),
        };
        let (translated, context) = adapt_request(body, kind, settings, &deployment.model_id)?;
        Ok(Outgoing {
            body: ReqBody::new([translated]),
            endpoint: Endpoint::Predict,
            plan: context,
        })
    }

    async fn response(
        &self,
        ex: &mut Exchange,
        answer: Response<EngineBody>,
        context: Context,
    ) -> Result<Response<ResBody>, ApiError> {
        let Some(deployment) = ex.deployment.clone() else {
            return Err(ApiError::internal("no deployment resolved"));
        };
        let Some(settings) = &deployment.predict else {
            return Err(ApiError::internal(
                "a predict deployment without its settings",
            ));
        };
        // Boxed: the state of reading a predict answer would otherwise be part of every
        // request's future, OpenAI-kind ones included (the proxy awaits either kind).
        Box::pin(relay(
            answer,
            context,
            deployment.heartbeat,
            settings,
            &mut ex.record,
        ))
        .await
    }
}

/// Predict models have no embeddings (or any route but chat completions and completions).
fn unsupported(endpoint: Endpoint, deployment: &Deployment) -> ApiError {
    ApiError::bad_request(format!(
        "model '{}' is served through Bridge's predict adapter, which supports chat completions \
         and completions, not {}",
        deployment.model_id,
        endpoint.client_path()
    ))
    .with_code("unsupported_endpoint")
}

/// Which OpenAI route the client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `chat/completions`.
    Chat,
    /// `completions`.
    Completion,
}

/// What the answer needs to know about the request it answers.
#[derive(Debug, Clone)]
pub struct Context {
    /// Which route the client called.
    pub kind: Kind,
    /// The client asked for a stream.
    pub stream: bool,
    /// `stream_options.include_usage`: a final usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// `chatcmpl-<uuid>` or `cmpl-<uuid>`.
    pub id: String,
    /// Unix seconds, as OpenAI answers carry them.
    pub created: u64,
    /// The `model` the client sent, reported back as it was.
    pub model: String,
    /// Where the text is in the model's object answers.
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

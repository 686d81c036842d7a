//! OpenAI-compatible engines (vLLM, SGLang, TGI, llama.cpp's server): the identity kind.
//!
//! The body goes as the client sent it, minus the routing field, with `model` replaced by the
//! engine's own name when the client routed by model name, and with a request for stream usage
//! when Bridge counts tokens the client did not ask for. The answer is relayed as it comes:
//! JSON untouched, streams event by event through the client's dialect, errors normalised.

use bytes::Bytes;
use http::{header, HeaderValue, Response};

use super::{Engine, Outgoing};
use crate::dialect;
use crate::error::ApiError;
use crate::relay::head::{compressed_stream, engine_error, is_compressed, mark_sse};
use crate::relay::lifetime::EngineBody;
use crate::relay::ResBody;
use crate::stage::exchange::Exchange;
use crate::stage::resolve::served_model;
use crate::stage::route::RoutedBody;
use crate::upstream::client::Upstream;

/// An OpenAI-compatible engine.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiEngine;

/// What the answer needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The client asked for a stream.
    stream: bool,
    /// Bridge asked the engine for a usage chunk the client did not ask for (it is then taken
    /// out of the stream).
    strip_usage: bool,
}

impl Engine for OpenAiEngine {
    type Plan = Plan;

    async fn request(
        &self,
        upstream: &Upstream,
        ex: &Exchange,
        routed: &RoutedBody,
        body: &Bytes,
    ) -> Result<Outgoing<Plan>, ApiError> {
        let Some(deployment) = ex.deployment.as_deref() else {
            return Err(ApiError::internal("no deployment resolved"));
        };
        let new_model = match routed.routing.from_model_name {
            true => Some(served_model(upstream, deployment).await?),
            false => None,
        };
        let inject = deployment.inject_usage
            && dialect::of(ex.endpoint).injects_usage()
            && routed.wants_usage_injected();
        Ok(Outgoing {
            body: routed.upstream_body(body, new_model.as_deref(), inject),
            endpoint: ex.endpoint,
            plan: Plan {
                stream: routed.is_stream(),
                strip_usage: inject,
            },
        })
    }

    async fn response(
        &self,
        ex: &mut Exchange,
        answer: Response<EngineBody>,
        plan: Plan,
    ) -> Result<Response<ResBody>, ApiError> {
        let (mut parts, mut body) = answer.into_parts();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            // Only a prefix is read: the answer is the error, not something the client left.
            body.settle();
            return Err(engine_error(parts.status, &parts.headers, body).await);
        }
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        if is_sse && is_compressed(&parts.headers) {
            // Bridge asks for identity; a compressed stream cannot be scanned, and Bridge never
            // inflates (so a compression bomb has nothing to explode in).
            return Err(compressed_stream());
        }
        let heartbeat = ex.deployment.as_ref().and_then(|d| d.heartbeat);
        let dialect = dialect::of(ex.endpoint);
        if plan.stream && !is_sse {
            // The SDK would end the stream with no error and no answer: say what happened.
            body.settle();
            let error = ApiError::bad_gateway(
                "the engine answered a streaming request with a whole (non-stream) answer",
            )
            .with_code("upstream_not_streaming");
            let mut response = Response::new(ResBody::full(dialect.stream_error(&error)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            mark_sse(headers);
            return Ok(response);
        }
        let body = if is_sse {
            mark_sse(&mut parts.headers);
            dialect.relay_stream(body, plan.strip_usage, heartbeat)
        } else {
            body.track_usage(dialect.json_usage());
            ResBody::Engine(body)
        };
        Ok(Response::from_parts(parts, body))
    }
}

//! The one place where failures become responses.
//!
//! Every stage returns an [`ApiError`]; [`ApiError::into_response`] writes it in the OpenAI error
//! envelope `{"error": {"message", "type", "param", "code"}}` with `code` a string or null, which
//! is what every official SDK parses (vLLM's integer `code` breaks strict clients, so errors
//! relayed from engines are normalised to it: [`ApiError::from_engine`], in
//! [`crate::relay::head`]). [`ApiError::sse_event`] writes the same envelope as an in-band stream
//! event for failures after a 200 was sent. Each failure has a named constructor with its
//! `code`, the low-cardinality [`ApiError::label`] that logs use.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::headers;

/// A failure to report to the client, already classified. Boxed so that `Result`s on the hot
/// path stay one word wide; errors are the cold path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(Box<ErrorFields>);

/// The parts of an [`ApiError`], reachable through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// The HTTP status sent to the client.
    pub status: StatusCode,
    /// OpenAI's `type`, e.g. `invalid_request_error`.
    pub kind: Cow<'static, str>,
    /// What went wrong, for a person: names the field, the model or the limit.
    pub message: Cow<'static, str>,
    /// The request field at fault, dotted (`baseten.model_id`), when there is one.
    pub param: Option<Cow<'static, str>>,
    /// A stable, low-cardinality name for the failure (`model_not_found`), as a string: the
    /// SDKs and the metrics label read it.
    pub code: Option<Cow<'static, str>>,
    /// Seconds for a `retry-after` header; the SDKs honour it between 0 and 120 s.
    pub retry_after: Option<u32>,
    /// `x-should-retry` for the SDKs: `Some(false)` on Bridge's own client errors (they would
    /// fail the same way again), unset on relayed engine errors so the SDKs' usual rules apply.
    pub should_retry: Option<bool>,
    /// Methods for the `allow` header of a 405.
    pub allow: Option<&'static str>,
    /// No byte of the request can have reached an engine, so another replica may be tried.
    pub retry_safe: bool,
    /// For failures of an engine request: why, for metrics.
    pub upstream_failure: Option<UpstreamFailure>,
    /// Bridge's own time for the request, for the `x-bridge-overhead-us` header.
    pub overhead_us: Option<u64>,
    /// More headers for the answer (a 429's `x-ratelimit-*`).
    pub headers: Option<Box<HeaderMap>>,
}

/// Why an engine request failed, for `bridge_upstream_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be opened.
    Connect,
    /// The connection failed or broke off (before or during the answer).
    Reset,
    /// No answer, or silence, within the deployment's limits.
    Timeout,
    /// The engine answered 5xx.
    ServerError,
}

/// How to tell a client to pass routing information; included in every routing 400.
pub const ROUTING_HINT: &str = "pass extra_body={\"baseten\": {\"model_id\": \"<model id>\"}} \
(optionally with \"deployment_id\"), or set model to \"baseten/<model id>\" or \
\"baseten/<model id>/<deployment id>\", or send the headers x-baseten-model-id (and \
x-baseten-deployment-id)";

impl std::ops::Deref for ApiError {
    type Target = ErrorFields;
    fn deref(&self) -> &ErrorFields {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorFields {
        &mut self.0
    }
}

impl ApiError {
    /// An error with its status, OpenAI `type` and message; Bridge's own client errors (4xx)
    /// tell the SDKs not to retry. Prefer the named constructors below.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError(Box::new(ErrorFields {
            status,
            kind: Cow::Borrowed(kind),
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            should_retry: status.is_client_error().then_some(false),
            allow: None,
            retry_safe: false,
            upstream_failure: None,
            overhead_us: None,
            headers: None,
        }))
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Marks a failure that happened before any byte reached an engine.
    pub fn retry_safe(mut self) -> Self {
        self.retry_safe = true;
        self
    }

    /// Leaves retrying to the SDKs' usual rules (for client errors a retry can cure).
    pub fn retryable(mut self) -> Self {
        self.should_retry = None;
        self
    }

    /// Marks a failed engine request, with why.
    pub fn upstream(mut self, why: UpstreamFailure) -> Self {
        self.upstream_failure = Some(why);
        self
    }

    /// Sets the error's stable `code`.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// A client mistake in the request (400).
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A missing or unknown key (401).
    pub fn unauthorized(message: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
            .with_code("invalid_api_key")
    }

    /// Unknown model. Also used, word for word, for a model outside the caller's allow-list.
    pub fn model_not_found(model_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model '{model_id}' does not exist or is not available to this API key"),
        )
        .with_param("baseten.model_id")
        .with_code("model_not_found")
    }

    /// A model without the named deployment (or with it retiring).
    pub fn deployment_not_found(model_id: &str, deployment_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model '{model_id}' has no deployment '{deployment_id}'"),
        )
        .with_param("baseten.deployment_id")
        .with_code("deployment_not_found")
    }

    /// A request body over the configured limit (413).
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    /// The engine could not be reached or broke the connection before answering (502).
    pub fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "server_error", message)
            .with_code("upstream_unavailable")
    }

    /// The engine did not answer in time (504).
    pub fn gateway_timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
            .with_code("upstream_timeout")
    }

    /// A failure of Bridge itself (500).
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// A path Bridge does not serve (404).
    pub fn unknown_route(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .with_code("unknown_route")
    }

    /// A method the route does not take (405, with the `allow` header).
    pub fn method_not_allowed(message: impl Into<Cow<'static, str>>, allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            message,
        )
        .with_code("method_not_allowed");
        e.allow = Some(allow);
        e
    }

    /// Too many request headers, or too many bytes of them (431).
    pub fn headers_too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            message,
        )
        .with_code("request_headers_too_large")
    }

    /// A request body that did not arrive in time (408; a retry may well pass).
    pub fn body_read_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} ms",
                limit.as_millis()
            ),
        )
        .with_code("body_read_timeout")
        .retryable()
    }

    /// A body of another type than the route takes (415).
    pub fn unsupported_media_type_for(wanted: &str, headers: &http::HeaderMap) -> Self {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .trim();
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!("Content-Type must be {wanted}, not '{given}'"),
        )
        .with_code("unsupported_media_type")
    }

    /// A deployment at its concurrency limit (429 with `retry-after`: the SDKs wait and retry).
    pub fn overloaded(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("deployment_overloaded")
            .retryable();
        e.retry_after = Some(1);
        e
    }

    /// A key or model over one of its limits (429, OpenAI's `rate_limit_exceeded` with `type`
    /// `requests` or `tokens`): the SDKs wait `retry-after` and retry. A request larger than
    /// the whole limit (`retry_after` `None`) is told not to retry.
    pub fn rate_limited(
        tokens: bool,
        message: impl Into<Cow<'static, str>>,
        retry_after: Option<u32>,
    ) -> Self {
        let kind = if tokens { "tokens" } else { "requests" };
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message)
            .with_code("rate_limit_exceeded");
        e.should_retry = retry_after.is_none().then_some(false);
        e.retry_after = retry_after;
        e
    }

    /// A deployment with no replica ready while it wakes (503 with `retry-after`).
    pub fn waking(message: impl Into<Cow<'static, str>>, retry_after: u32) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("deployment_waking");
        e.retry_after = Some(retry_after);
        e
    }

    /// A deployment none of whose replicas may take a request: none discovered, or none has
    /// passed a health check yet (503 with `retry-after`: the SDKs wait and retry).
    pub fn no_ready_replica(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("no_ready_replica");
        e.retry_after = Some(1);
        e
    }

    /// An engine sent bytes that are not UTF-8 (502): Bridge never changes a model's text, so
    /// the answer ends with this instead.
    pub fn upstream_invalid_utf8() -> Self {
        Self::bad_gateway("the engine sent bytes that are not UTF-8")
            .with_code("upstream_invalid_utf8")
    }

    /// A bounded resource of a deployment is fully taken by requests in flight (503 with
    /// `retry-after`: the SDKs wait and retry).
    pub fn busy(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("deployment_busy");
        e.retry_after = Some(1);
        e
    }

    /// Bridge is stopping and the drain timeout passed with the answer still open (503; a
    /// retry reaches another instance).
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "Bridge is shutting down and its drain timeout passed before the answer was complete; retry the request",
        )
        .with_code("shutting_down")
    }

    /// A stored response Bridge cannot place: never relayed by this instance for this key,
    /// forgotten, or its replica is gone (404).
    pub fn response_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "no response with id '{id}' is known to this Bridge for this API key: responses \
                 are reached on the replica that made them, which Bridge learns when it relays \
                 them (and remembers for 24 h); route it with the x-baseten-model-id header"
            ),
        )
        .with_param("response_id")
        .with_code("response_not_found")
    }

    /// A request whose URL, with the engine's address, is no URL any more (414).
    pub fn uri_too_long() -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "invalid_request_error",
            "the request's URL is too long to forward",
        )
        .with_code("uri_too_long")
    }

    /// A change that contradicts the state it would apply to (409).
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", message).with_code("conflict")
    }

    /// The low-cardinality name of this failure, for logs and metrics: its `code`, else its
    /// `type`.
    pub fn label(&self) -> &str {
        self.code.as_deref().unwrap_or(&self.kind)
    }

    /// The envelope as JSON bytes.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        // Serialising plain strings cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// The HTTP response for this error, in any body type that can hold bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = self.body();
        self.into_response_with(body)
    }

    /// The HTTP response for this error with `body`, another API's envelope for it: the
    /// status and headers are the same whatever the dialect.
    pub fn into_response_with<B: From<Bytes>>(self, body: Bytes) -> Response<B> {
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(us) = self.overhead_us {
            headers.insert(headers::OVERHEAD, HeaderValue::from(us));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(more) = &self.headers {
            headers.extend(more.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(retry) = self.should_retry {
            headers.insert(
                headers::SHOULD_RETRY,
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        response
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;

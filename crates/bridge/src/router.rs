//! Dispatch by method and path, plus the routes Bridge answers itself (health, model list).
//!
//! Every route exists twice: under `/v1/direct` (what clients get with
//! `base_url=".../v1/direct"`) and under `/v1` (the hosted bridge's later URL form).
//! Every response, success or error, carries `x-request-id`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::body::ResBody;
use crate::error::ApiError;
use crate::metrics;
use crate::proxy::forward;
use crate::registry::{Endpoint, Model, Registry};
use crate::AppState;

/// Most request headers accepted (431 past it).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request header names and values accepted (431 past it).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Longest client-supplied `x-request-id` kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

enum Route<'a> {
    Health,
    Metrics,
    Models,
    Model(&'a str),
    /// A forwarded route; the model id when the URL names it (`/{model_id}/v1/...`).
    Forward(Endpoint, Option<&'a str>),
}

fn route_for(path: &str) -> Option<Route<'_>> {
    match path {
        "/health" => return Some(Route::Health),
        "/metrics" => return Some(Route::Metrics),
        _ => {}
    }
    if let Some(rest) = path
        .strip_prefix("/v1/direct")
        .or_else(|| path.strip_prefix("/v1"))
    {
        let found = match rest {
            "/chat/completions" => Some(Route::Forward(Endpoint::ChatCompletions, None)),
            "/completions" => Some(Route::Forward(Endpoint::Completions, None)),
            "/embeddings" => Some(Route::Forward(Endpoint::Embeddings, None)),
            "/models" => Some(Route::Models),
            _ => rest
                .strip_prefix("/models/")
                .filter(|id| !id.is_empty())
                .map(Route::Model),
        };
        if found.is_some() {
            return found;
        }
    }
    by_model_in_path(path)
}

/// The previous bridge's URL form, `/{model_id}/v1/chat/completions` (and `/completions`): the
/// model's production deployment, whatever its kind.
fn by_model_in_path(path: &str) -> Option<Route<'_>> {
    let (prefix, endpoint) = if let Some(p) = path.strip_suffix("/v1/chat/completions") {
        (p, Endpoint::ChatCompletions)
    } else {
        (path.strip_suffix("/v1/completions")?, Endpoint::Completions)
    };
    let model_id = prefix.strip_prefix('/')?;
    (!model_id.is_empty() && !model_id.contains('/'))
        .then_some(Route::Forward(endpoint, Some(model_id)))
}

/// The hyper service function. Everything logged while the request is handled carries its
/// request id, through the span.
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let request_id = request_id(request.headers().get("x-request-id"));
    let span = tracing::info_span!("request", id = %String::from_utf8_lossy(request_id.as_bytes()));
    Ok(dispatch(state, request, request_id).instrument(span).await)
}

async fn dispatch(
    state: Arc<AppState>,
    request: Request<Incoming>,
    request_id: HeaderValue,
) -> Response<ResBody> {
    let path = request.uri().path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let method = request.method().clone();
    let result = match route_for(path) {
        _ if request.headers().len() > MAX_HEADERS => Err(headers_too_large(format!(
            "the request has {} headers; at most {MAX_HEADERS} are accepted",
            request.headers().len()
        ))),
        _ if header_bytes(request.headers()) > MAX_HEADER_BYTES => Err(headers_too_large(format!(
            "the request headers are larger than {MAX_HEADER_BYTES} bytes"
        ))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("unknown route: {method} {path}"),
        )
        .with_code("unknown_route")),
        Some(Route::Forward(endpoint, model_id)) if method == Method::POST => {
            let model_id = model_id.map(str::to_string);
            forward(&state, request, endpoint, model_id.as_deref(), &request_id).await
        }
        Some(Route::Forward(..)) => Err(method_not_allowed(&method, path, "POST")),
        Some(_) if method != Method::GET && method != Method::HEAD => {
            Err(method_not_allowed(&method, path, "GET, HEAD"))
        }
        Some(Route::Health) => Ok(health(&state)),
        Some(Route::Metrics) => {
            let registry = state.registry();
            if registry.public_metrics {
                Ok(metrics::response(&registry))
            } else {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "metrics are served on the admin listener only ([server] metrics = false)",
                )
                .with_code("unknown_route"))
            }
        }
        Some(Route::Models) => list_models(&state, &request),
        Some(Route::Model(id)) => get_model(&state, &request, id),
    };
    let mut response = result.unwrap_or_else(|e| {
        tracing::debug!(status = %e.status, message = %e.message, "request failed");
        e.into_response()
    });
    response.headers_mut().insert("x-request-id", request_id);
    response
}

/// `200 ok` while serving; `503 draining` once a stop was requested, so load balancers move
/// traffic away while requests in flight finish.
fn health(state: &AppState) -> Response<ResBody> {
    if state.is_draining() {
        let mut response = Response::new(ResBody::full("draining"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    Response::new(ResBody::full("ok"))
}

fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

fn headers_too_large(message: String) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "invalid_request_error",
        message,
    )
    .with_code("request_headers_too_large")
}

fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {path}; use {allow}"),
    )
    .with_code("method_not_allowed");
    e.allow = Some(allow);
    e
}

/// The client's request id when it is sane, else a fresh random one.
pub(crate) fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given.filter(|v| {
        !v.is_empty()
            && v.len() <= MAX_REQUEST_ID_LEN
            && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    }) {
        return v.clone();
    }
    // 32 hex digits, written by hand: `format!` cost as much as the rest of the router.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn model_object(model: &Model, created: u64) -> Value {
    let deployments: Vec<Value> = model
        .deployments
        .values()
        .map(|d| {
            // Replica state without addresses: clients may read this list, and a replica's
            // address is the operator's business (it is in `/metrics` and the admin API).
            let replica_state: Vec<Value> = d.replicas.iter().map(|r| r.status(false)).collect();
            json!({
                "id": d.id,
                "api": match d.api { crate::config::Api::Openai => "openai", crate::config::Api::Predict => "predict" },
                "production": d.id == model.production,
                "replicas": d.replicas.len(),
                "replica_state": replica_state,
            })
        })
        .collect();
    json!({
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": "bridge",
        "production": model.production,
        "deployments": deployments,
    })
}

fn visible<'r>(
    registry: &'r Registry,
    request: &Request<Incoming>,
) -> Result<Vec<&'r Arc<Model>>, ApiError> {
    let caller = registry.keys.authenticate(request.headers())?;
    Ok(registry
        .models
        .values()
        .filter(|m| caller.allows(&m.id))
        .collect())
}

fn json_response(value: &Value) -> Response<ResBody> {
    let mut response = Response::new(ResBody::full(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /v1/direct/models`: the models the caller's key may use, in the OpenAI list shape.
fn list_models(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<Response<ResBody>, ApiError> {
    let registry = state.registry();
    let data: Vec<Value> = visible(&registry, request)?
        .into_iter()
        .map(|m| model_object(m, registry.created))
        .collect();
    Ok(json_response(&json!({"object": "list", "data": data})))
}

/// `GET /v1/direct/models/{id}`: one model, or 404 exactly as for a model the key may not use.
fn get_model(
    state: &AppState,
    request: &Request<Incoming>,
    id: &str,
) -> Result<Response<ResBody>, ApiError> {
    let registry = state.registry();
    let model = visible(&registry, request)?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::model_not_found(id).with_param("model"))?;
    Ok(json_response(&model_object(model, registry.created)))
}

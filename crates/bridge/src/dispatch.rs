//! Dispatch by method and path, plus the routes Bridge answers itself (health, model list).
//!
//! Every route exists twice: under `/v1/direct` (what clients get with
//! `base_url=".../v1/direct"`) and under `/v1` (the hosted bridge's later URL form).
//! Every response, success or error, carries `x-request-id`. [`handle`] is generic over the
//! request body, so routing and error shapes can be tested in process, with no socket.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use serde_json::{json, Value};

use crate::body::BoxError;
use crate::config::live::Live;
use crate::config::registry::{Endpoint, Model, Registry};
use crate::dialect;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::headers::REQUEST_ID;
use crate::observe::metrics;
use crate::observe::spans::Trace;
use crate::observe::trace::Traces;
use crate::proxy::forward;
use crate::relay::ResBody;
use crate::stage::auth::authenticate;
use crate::stage::exchange::Exchange;
use crate::upstream::client::Upstream;
use crate::upstream::request::ForwardOnly;

/// What every request on one worker shares: the routing table in force, the worker's upstream
/// connection pool, and whether Bridge is stopping.
#[derive(Debug)]
pub struct AppState {
    live: Arc<Live>,
    upstream: Upstream,
    /// Set once a stop was requested (shared by all workers): `/health` then answers 503.
    draining: Arc<AtomicBool>,
    /// The fleet's limits (shared by all workers).
    fleet: Arc<Fleet>,
    /// Traces, when `[tracing]` exports them (shared by all workers).
    traces: Option<Arc<Traces>>,
}

impl AppState {
    /// State for one worker: the routing table, the draining flag and the limits are shared,
    /// the upstream pool is the worker's own.
    pub fn new(
        live: Arc<Live>,
        draining: Arc<AtomicBool>,
        fleet: Arc<Fleet>,
        traces: Option<Arc<Traces>>,
    ) -> Self {
        AppState {
            live,
            upstream: Upstream::new(),
            draining,
            fleet,
            traces,
        }
    }

    /// The worker's way to its engines.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The routing table for one request. A request keeps the table it started with.
    pub fn registry(&self) -> Arc<Registry> {
        self.live.load()
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Longest client-supplied `x-request-id` kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

enum Route<'a> {
    Health,
    Metrics,
    Models,
    Model(&'a str),
    /// A forwarded route; the model id when the URL names it (`/{model_id}/v1/...`), or the
    /// stored response it names (`responses/{id}`).
    Forward(Endpoint, Option<&'a str>, Option<&'a str>),
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
            "/models" => Some(Route::Models),
            _ => rest
                .strip_prefix("/models/")
                .filter(|id| !id.is_empty())
                .map(Route::Model)
                .or_else(|| {
                    let (endpoint, id) = Endpoint::from_client_path(rest.strip_prefix('/')?)?;
                    Some(Route::Forward(endpoint, None, id))
                }),
        };
        if found.is_some() {
            return found;
        }
    }
    by_model_in_path(path)
}

/// A route some deployment allows beyond Bridge's table (`extra_routes`); which deployment
/// may take it is decided once the request is routed.
fn extra_route<'p>(registry: &Registry, path: &'p str) -> Option<Route<'p>> {
    let route = extra_path(path)?;
    registry
        .extra_routes
        .contains(route)
        .then_some(Route::Forward(Endpoint::Extra, None, None))
}

/// The path after `/v1/direct/` or `/v1/`.
fn extra_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/direct/")
        .or_else(|| path.strip_prefix("/v1/"))
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
    (!model_id.is_empty() && !model_id.contains('/')).then_some(Route::Forward(
        endpoint,
        Some(model_id),
        None,
    ))
}

/// The service function. The lines logged about a request carry its `request_id` as a field
/// (no `tracing` span per request: entering it on every poll cost more than the log line).
///
/// Neither this nor [`dispatch`] is an `async fn`: one keeps a second copy of each argument it
/// takes by value, and the server copies every byte of the request's future when it boxes it.
/// The request's parts stay here, lent to the stages.
pub fn handle<B>(
    state: Arc<AppState>,
    request: Request<B>,
) -> impl Future<Output = Result<Response<ResBody>, Infallible>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let request_id = request_id(request.headers().get(REQUEST_ID));
    let (mut parts, body) = request.into_parts();
    let forward_only = parts.extensions.remove::<ForwardOnly>();
    dispatch(state, parts, body, request_id, forward_only)
}

// An `async fn` would hold its arguments twice (see `handle`).
#[allow(clippy::manual_async_fn)]
fn dispatch<B>(
    state: Arc<AppState>,
    parts: Parts,
    body: B,
    request_id: HeaderValue,
    forward_only: Option<ForwardOnly>,
) -> impl Future<Output = Result<Response<ResBody>, Infallible>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async move {
        let path = parts.uri.path();
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let method = parts.method.clone();
        let registry = state.registry();
        let route = route_for(path).or_else(|| extra_route(&registry, path));
        // The client's dialect shapes its errors; Bridge's own routes speak OpenAI's.
        let dialect = dialect::of(match route {
            Some(Route::Forward(endpoint, ..)) => endpoint,
            _ => Endpoint::Models,
        });
        let result = match route {
            None => Err(ApiError::unknown_route(format!(
                "unknown route: {method} {path}"
            ))),
            Some(Route::Forward(endpoint, model_id, response_id))
                if endpoint.methods().split(", ").any(|m| m == method.as_str()) =>
            {
                let trace = (state.traces.as_ref()).and_then(|t| Trace::start(t, &parts.headers));
                // Boxed: the exchange is handed down the stages, and each `async fn` that takes it
                // by value would keep copies of it in the request's future.
                let mut ex = Box::new(Exchange::new(
                    registry,
                    request_id.clone(),
                    endpoint,
                    model_id.map(str::to_string),
                    state.fleet.clone(),
                    trace,
                ));
                if let Some(trace) = ex.record.trace() {
                    trace.method(&method);
                }
                ex.method = method.clone();
                if let Some(ForwardOnly(lines)) = forward_only {
                    ex.forward_only = lines;
                }
                ex.response_id = response_id.map(str::to_string);
                if endpoint == Endpoint::Extra {
                    ex.extra_route = extra_path(path).map(str::to_string);
                }
                // Stored responses (pagination of input items) and extra routes take a query.
                if endpoint == Endpoint::Extra || response_id.is_some() {
                    ex.query = parts.uri.query().map(str::to_string);
                }
                forward(&state.upstream, ex, &parts, body).await
            }
            Some(Route::Forward(endpoint, ..)) => {
                Err(method_not_allowed(&method, path, endpoint.methods()))
            }
            Some(_) if method != Method::GET && method != Method::HEAD => {
                Err(method_not_allowed(&method, path, "GET, HEAD"))
            }
            Some(Route::Health) => Ok(health(&state)),
            Some(Route::Metrics) => {
                if registry.public_metrics {
                    Ok(metrics::response(
                        &registry,
                        &state.fleet,
                        state.traces.as_deref(),
                        state.is_draining(),
                    ))
                } else {
                    Err(ApiError::unknown_route(
                        "metrics are served on the admin listener only ([server] metrics = false)",
                    ))
                }
            }
            Some(Route::Models) => list_models(&state, &parts.headers),
            Some(Route::Model(id)) => get_model(&state, &parts.headers, id),
        };
        let mut response = result.unwrap_or_else(|e| {
            tracing::debug!(request_id = %String::from_utf8_lossy(request_id.as_bytes()), status = %e.status, error = e.label(), message = %e.message, "request failed");
            dialect.error_response(e)
        });
        response.headers_mut().insert(REQUEST_ID, request_id);
        Ok(response)
    }
}

/// The answer to a request refused before it could be read (a malformed or oversized head):
/// OpenAI's envelope, as on Bridge's own routes, with a fresh request id.
pub fn refusal(error: ApiError) -> Response<ResBody> {
    tracing::debug!(status = %error.status, error = error.label(), message = %error.message, "request head refused");
    let mut response = dialect::of(Endpoint::Models).error_response(error);
    response.headers_mut().insert(REQUEST_ID, request_id(None));
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

fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> ApiError {
    ApiError::method_not_allowed(
        format!("{method} is not allowed on {path}; use {allow}"),
        allow,
    )
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
                "api": d.api.name(),
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
    headers: &HeaderMap,
) -> Result<Vec<&'r Arc<Model>>, ApiError> {
    let caller = authenticate(&registry.keys, headers, false)?;
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
fn list_models(state: &AppState, headers: &HeaderMap) -> Result<Response<ResBody>, ApiError> {
    let registry = state.registry();
    let data: Vec<Value> = visible(&registry, headers)?
        .into_iter()
        .map(|m| model_object(m, registry.created))
        .collect();
    Ok(json_response(&json!({"object": "list", "data": data})))
}

/// `GET /v1/direct/models/{id}`: one model, or 404 exactly as for a model the key may not use.
fn get_model(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response<ResBody>, ApiError> {
    let registry = state.registry();
    let model = visible(&registry, headers)?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::model_not_found(id).with_param("model"))?;
    Ok(json_response(&model_object(model, registry.created)))
}

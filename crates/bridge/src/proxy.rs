//! The request pipeline for the forwarded routes, one function per stage:
//! authenticate → read body → route → resolve deployment → pick replica → send → relay.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::Caller;
use crate::balance::{pick, InFlight, Overloaded};
use crate::body::{ReqBody, ResBody};
use crate::error::ApiError;
use crate::health;
use crate::metrics::UpstreamFailure;
use crate::pool::UpstreamBody;
use crate::predict;
use crate::record::Record;
use crate::registry::{Deployment, Endpoint, Registry};
use crate::relay::relay;
use crate::routing::{route, route_by_path, Routing};
use crate::upstream::{build_request, upstream_headers};
use crate::AppState;

/// Response header with Bridge's own time for the request, in microseconds: from arrival to the
/// response head, less the time spent waiting for engines.
pub const OVERHEAD_HEADER: &str = "x-bridge-overhead-us";

/// Time allowed to ask a replica for its model name.
const MODEL_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards one request to `endpoint` on the deployment it names in its body, or, for the
/// previous bridge's URL form `/{model_id}/v1/...`, on `path_model`'s production deployment.
/// Whatever happens, the request is recorded once its answer is over (see [`Record`]).
pub async fn forward(
    state: &AppState,
    request: Request<Incoming>,
    endpoint: Endpoint,
    path_model: Option<&str>,
    request_id: &HeaderValue,
) -> Result<Response<ResBody>, ApiError> {
    let registry = state.registry();
    let mut record = Record::new(
        registry.clone(),
        request_id.clone(),
        endpoint.metrics_index(),
    );
    match answer(
        state,
        &registry,
        request,
        endpoint,
        path_model,
        request_id,
        &mut record,
    )
    .await
    {
        Ok(mut response) => {
            record.set_status(response.status().as_u16());
            let overhead = record.overhead().as_micros() as u64;
            response
                .headers_mut()
                .insert(OVERHEAD_HEADER, HeaderValue::from(overhead));
            match response.body_mut().upstream_mut() {
                // The answer is still to be relayed: recorded when it is over.
                Some(body) => body.attach(record),
                // Made whole in memory (a predict answer): over now.
                None => record.settle(),
            }
            Ok(response)
        }
        Err(mut error) => {
            record.set_status(error.status.as_u16());
            record.settle();
            error.overhead_us = Some(record.overhead().as_micros() as u64);
            Err(error)
        }
    }
}

/// The stages from authentication to the response head. A client that leaves while this runs
/// drops it, and with it the engine request.
async fn answer(
    state: &AppState,
    registry: &Registry,
    request: Request<Incoming>,
    endpoint: Endpoint,
    path_model: Option<&str>,
    request_id: &HeaderValue,
    record: &mut Record,
) -> Result<Response<ResBody>, ApiError> {
    let caller = registry.keys.authenticate(request.headers())?;
    record.set_key(caller.label());
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let read = read_body(body, &parts.headers, registry.max_request_bytes);
    let body = tokio::time::timeout(registry.body_read_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "the request body did not arrive within {} ms",
                    registry.body_read_timeout.as_millis()
                ),
            )
            .with_code("body_read_timeout")
            .retryable()
        })??;
    let routed = match path_model {
        Some(model_id) => route_by_path(&body, model_id)?,
        None => route(&body)?,
    };
    let deployment = resolve(registry, caller, &routed.routing)?;
    record.set_deployment(deployment.clone());
    // Adapt the request: OpenAI engines get the body as sent (minus the routing field, plus a
    // request for usage when Bridge counts it); predict models get it translated.
    let (upstream_body, target, adapted, strip_usage) = match &deployment.predict {
        None => {
            let new_model = match routed.routing.from_model_name {
                true => Some(served_model(state, deployment).await?),
                false => None,
            };
            let inject = deployment.inject_usage && routed.wants_usage_injected();
            let forwarded = routed.upstream_body(&body, new_model.as_deref(), inject);
            (forwarded, endpoint, None, inject)
        }
        Some(settings) => {
            let kind = match endpoint {
                Endpoint::ChatCompletions => predict::Kind::Chat,
                Endpoint::Completions => predict::Kind::Completion,
                _ => return Err(predict_unsupported(endpoint, deployment)),
            };
            let (translated, context) =
                predict::adapt_request(&body, kind, settings, &deployment.model_id)?;
            (
                ReqBody::new([translated]),
                Endpoint::Predict,
                Some(context),
                false,
            )
        }
    };
    drop(body);
    let headers = upstream_headers(
        &parts.headers,
        request_id,
        deployment.upstream_auth.as_ref(),
        upstream_body.len(),
    );
    let response = send(state, deployment, target, headers, upstream_body, record).await?;
    tracing::debug!(key = caller.name(), model = %deployment.model_id, deployment = %deployment.id, "forwarded");
    match adapted {
        None => relay(response, deployment.heartbeat, strip_usage).await,
        Some(context) => predict::relay(response, context, deployment.heartbeat, record).await,
    }
}

/// Predict models have no embeddings (or any route but chat completions and completions).
fn predict_unsupported(endpoint: Endpoint, deployment: &Deployment) -> ApiError {
    ApiError::bad_request(format!(
        "model '{}' is served through Bridge's predict adapter, which supports chat completions          and completions, not {}",
        deployment.model_id,
        endpoint.suffix().trim_start_matches('/')
    ))
    .with_code("unsupported_endpoint")
}

/// Sends to a replica picked by the balancer. A failure before any byte reached an engine is
/// tried on another replica, within the deployment's `max_retries` and retry budget; nothing
/// else is ever retried. Each outcome feeds the replica's passive health.
async fn send(
    state: &AppState,
    deployment: &Arc<Deployment>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: ReqBody,
    record: &mut Record,
) -> Result<Response<UpstreamBody>, ApiError> {
    let slot = match &deployment.limiter {
        Some(limiter) => Some(
            limiter
                .acquire()
                .await
                .map_err(|why| overloaded(deployment, why))?,
        ),
        None => None,
    };
    deployment.retry_budget.record_request();
    let deadline = deployment
        .total_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut tried: Vec<usize> = Vec::new();
    let mut next = Some((headers, body));
    // Parking: until when a request may wait for a deployment that is waking.
    let wake_until = deployment
        .wake
        .as_ref()
        .map(|w| tokio::time::Instant::now() + w.timeout);
    loop {
        let Some(index) = pick(deployment, &tried) else {
            return Err(ApiError::internal("no replica left to try"));
        };
        let replica = &deployment.replicas[index];
        if let Some(until) = wake_until {
            if !replica.state.is_available() {
                // Nothing can take the request now: wait for a replica instead of failing.
                health::park(&state.upstream, deployment, until).await?;
                tried.clear();
                continue;
            }
        }
        let (headers, body) = next.take().unwrap_or_default();
        // Keep a copy only when another attempt is possible (the body parts are shared buffers).
        let retry_possible = tried.len() < deployment.max_retries as usize
            && tried.len() + 1 < deployment.replicas.len();
        if retry_possible || wake_until.is_some() {
            next = Some((headers.clone(), body.clone()));
        }
        record.set_replica(index);
        let in_flight = InFlight::new(deployment.clone(), index);
        let request = build_request(Method::POST, replica.uri(endpoint), headers, body);
        let wait = deadline.map_or(deployment.first_byte_timeout, |d| {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            deployment.first_byte_timeout.min(left)
        });
        let sent_at = Instant::now();
        let result = state
            .upstream
            .send(request, deployment.connect_timeout, wait)
            .await;
        record.waited(sent_at.elapsed());
        match result {
            Ok(mut response) => {
                response.body_mut().limit(deployment.idle_timeout, deadline);
                if response.status().is_server_error() {
                    record.upstream_error(UpstreamFailure::ServerError);
                    note_failure(deployment, index);
                } else {
                    replica.state.record_success();
                }
                response.body_mut().hold(in_flight, slot);
                return Ok(response);
            }
            Err(error) => {
                if let Some(why) = error.upstream_failure {
                    record.upstream_error(why);
                }
                note_failure(deployment, index);
                if error.retry_safe && retry_possible && deployment.retry_budget.try_retry() {
                    deployment.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(replica = %replica.base, error = %error.message, "retrying on another replica");
                    tried.push(index);
                } else if let (true, Some(until)) = (error.retry_safe, wake_until) {
                    // No replica reachable yet: park until one may be, then start over.
                    health::park(&state.upstream, deployment, until).await?;
                    tried.clear();
                } else {
                    return Err(error);
                }
            }
        }
    }
}

/// 429 with `retry-after`: the SDKs wait and retry on their own.
fn overloaded(deployment: &Deployment, why: Overloaded) -> ApiError {
    let reason = match why {
        Overloaded::QueueFull => "its queue is full",
        Overloaded::WaitedTooLong => "no slot freed up in time",
    };
    let mut error = ApiError::new(
        http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!(
            "deployment '{}' of model '{}' is at its concurrency limit and {reason}; retry shortly",
            deployment.id, deployment.model_id
        ),
    )
    .with_code("deployment_overloaded")
    .retryable();
    error.retry_after = Some(1);
    error
}

fn note_failure(deployment: &Deployment, index: usize) {
    let replica = &deployment.replicas[index];
    if let Some(backoff) = replica.state.record_failure(deployment.eject_after) {
        tracing::warn!(
            model = %deployment.model_id,
            deployment = %deployment.id,
            replica = %replica.base,
            "replica ejected for {} ms after {} consecutive failures",
            backoff.as_millis(),
            deployment.eject_after
        );
    }
}

/// JSON bodies only; a missing content type is accepted (many hand-written clients omit it).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        format!("Content-Type must be application/json, not '{essence}'"),
    )
    .with_code("unsupported_media_type"))
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`: at once from
/// `content-length`, or while reading a chunked body (the rest is never buffered).
async fn read_body(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(e) => Err(
            ApiError::bad_request(format!("could not read the request body: {e}"))
                .with_code("body_read_failed"),
        ),
    }
}

/// Finds the deployment. A model the caller may not use is reported exactly like an unknown
/// one, so a key learns nothing about models outside its allow-list.
fn resolve<'r>(
    registry: &'r Registry,
    caller: Caller<'_>,
    routing: &Routing,
) -> Result<&'r Arc<Deployment>, ApiError> {
    let model = registry
        .model(&routing.model_id)
        .filter(|_| caller.allows(&routing.model_id))
        .ok_or_else(|| {
            let e = ApiError::model_not_found(&routing.model_id);
            if routing.from_model_name {
                e.with_param("model")
            } else {
                e
            }
        })?;
    let deployment_id = routing
        .deployment_id
        .as_deref()
        .unwrap_or(&model.production);
    model
        .deployments
        .get(deployment_id)
        // A retiring deployment takes no new requests, unless it became production again.
        .filter(|d| d.id == model.production || !d.retiring.load(Ordering::Relaxed))
        .ok_or_else(|| {
            let e = ApiError::deployment_not_found(&model.id, deployment_id);
            if routing.from_model_name {
                e.with_param("model")
            } else {
                e
            }
        })
}

/// The engine's own model name, for requests routed by `model = "baseten/..."`: the configured
/// `served_model`, else what a replica reports at `GET /models` (asked once, then cached).
async fn served_model(state: &AppState, deployment: &Deployment) -> Result<Arc<str>, ApiError> {
    if let Some(name) = &deployment.served_model {
        return Ok(Arc::from(name.as_str()));
    }
    let name = deployment
        .reported_model
        .get_or_try_init(|| async {
            let replica = &deployment.replicas[pick(deployment, &[]).unwrap_or(0)];
            let mut headers = HeaderMap::new();
            if let Some(auth) = &deployment.upstream_auth {
                headers.insert(header::AUTHORIZATION, auth.clone());
            }
            let request = build_request(Method::GET, replica.uri(Endpoint::Models), headers, ReqBody::empty());
            let lookup = async {
                let response = state.upstream.send(request, deployment.connect_timeout, MODEL_LOOKUP_TIMEOUT).await?;
                let body = Limited::new(response.into_body(), 1 << 20).collect().await;
                let bytes = body.map(|c| c.to_bytes()).unwrap_or_default();
                let list: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                list["data"][0]["id"].as_str().map(Arc::<str>::from).ok_or_else(|| {
                    ApiError::bad_gateway(format!(
                        "the engine at {} did not report a model name at /models; set served_model for deployment '{}'",
                        replica.base, deployment.id
                    ))
                })
            };
            tokio::time::timeout(MODEL_LOOKUP_TIMEOUT, lookup).await.map_err(|_| {
                ApiError::gateway_timeout(format!("the engine at {} did not list its models in time", replica.base))
            })?
        })
        .await?;
    Ok(name.clone())
}

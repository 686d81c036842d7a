//! Send: the request to a replica, tried again elsewhere only when that is provably safe.
//!
//! The deployment's concurrency slot is taken first (429 when it is full), then a replica is
//! picked for each attempt. A failure before any byte reached an engine is tried on another
//! replica, within the deployment's `max_retries` and retry budget; nothing else is ever
//! retried. Each outcome feeds the replica's passive health. The answer comes back as an
//! [`EngineBody`] that holds the slot and the replica's in-flight count until it is over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{Response, StatusCode};

use super::affinity::replica_index;
use super::exchange::Exchange;
use super::pick::{park, pick};
use crate::body::ReqBody;
use crate::config::registry::{Deployment, Endpoint};
use crate::config::response_ids::Made;
use crate::config::state::{InFlight, Overloaded};
use crate::error::ApiError;
use crate::error::UpstreamFailure;
use crate::observe::record::Record;
use crate::relay::lifetime::{EngineBody, Learner};
use crate::upstream::client::Upstream;
use crate::upstream::pool::Connected;
use crate::upstream::request::{EngineRequest, HeaderLines};

/// Sends to a replica picked by the balancer. A failure before any byte reached an engine is
/// tried on another replica, within the deployment's `max_retries` and retry budget; nothing
/// else is ever retried. Each outcome feeds the replica's passive health.
pub async fn send(
    upstream: &Upstream,
    ex: &mut Exchange,
    endpoint: Endpoint,
    headers: HeaderLines,
    body: ReqBody,
) -> Result<Response<EngineBody>, ApiError> {
    // Disjoint fields: the deployment is read while the record is written.
    let Some(deployment) = ex.deployment.as_ref() else {
        return Err(ApiError::internal("no deployment resolved"));
    };
    let record = &mut ex.record;
    let slot = match &deployment.limiter {
        Some(limiter) => {
            let queued = Instant::now();
            let slot = limiter.acquire().await;
            if let Some(trace) = record.trace() {
                trace.stage("queue", queued);
            }
            Some(slot.map_err(|why| overloaded(deployment, why))?)
        }
        None => None,
    };
    // The total deadline, and until when the request may park for a deployment that is waking.
    let (deadline, wake_until) = *ex.clocks.get_or_insert_with(|| {
        if deployment.total_timeout.is_none() && deployment.wake.is_none() {
            return (None, None);
        }
        let now = tokio::time::Instant::now();
        let deadline = deployment.total_timeout.map(|t| now + t);
        (deadline, deployment.wake.as_ref().map(|w| now + w.timeout))
    });
    let mut tried: Vec<usize> = Vec::new();
    let mut next = Some((headers, body));
    // Replicas that may be tried at all (a joining one may not): counted only when a retry is
    // otherwise possible, so a one-replica deployment never counts.
    let ready = || {
        let replicas = deployment.replicas.iter();
        replicas.filter(|r| !r.state.is_joining()).count()
    };
    let mut last_error = None;
    loop {
        // A request for a response held by one replica goes there, and nowhere else.
        let picked = match ex.pinned {
            Some(index) => (!tried.contains(&index)).then_some(index),
            None => pick(deployment, &tried, ex.affinity),
        };
        let Some(index) = picked else {
            if !tried.is_empty() {
                return Err(last_error.map_or_else(
                    || ApiError::internal("no replica left to try"),
                    |e| naming(deployment, e),
                ));
            }
            // No replica may take it: none was discovered, or none passed a check yet.
            let Some(until) = wake_until else {
                return Err(no_ready_replica(deployment));
            };
            if let Some(newer) = parked(upstream, deployment, until, record).await? {
                drop(slot);
                return resend(upstream, ex, endpoint, next, newer).await;
            }
            continue;
        };
        let replica = &deployment.replicas[index];
        if let Some(until) = wake_until {
            if !replica.state.is_available() {
                // Nothing can take the request now: wait for a replica instead of failing.
                if let Some(newer) = parked(upstream, deployment, until, record).await? {
                    drop(slot);
                    return resend(upstream, ex, endpoint, next, newer).await;
                }
                tried.clear();
                continue;
            }
        }
        let (headers, body) = next.take().unwrap_or_default();
        // Keep a copy only when another attempt is possible (the body parts are shared buffers).
        let retry_possible = ex.pinned.is_none()
            && tried.len() < deployment.max_retries as usize
            && tried.len() + 1 < deployment.replicas.len()
            && tried.len() + 1 < ready();
        if retry_possible || wake_until.is_some() {
            next = Some((headers.clone(), body.clone()));
        }
        record.set_replica(index);
        let in_flight = InFlight::new(replica.state.clone());
        let tail = ex.response_id.as_deref().or(ex.extra_route.as_deref());
        let Some(uri) = replica.uri_for(endpoint, tail, ex.query.as_deref()) else {
            return Err(ApiError::uri_too_long());
        };
        let request = EngineRequest::new(ex.method.clone(), uri, headers, body);
        if let Some(trace) = record.trace() {
            trace.attempt();
        }
        // The attempt's one reading of the clock before its answer: the deadline, the timeout,
        // the pool, the retry budget and the record all measure from it.
        let sent_at = Instant::now();
        // Counted once, at its first attempt (a request that moved to a newer generation was).
        if !ex.counted {
            ex.counted = true;
            deployment.retry_budget.record_request(sent_at);
        }
        let wait = deadline.map_or(deployment.first_byte_timeout, |d| {
            let left = d.saturating_duration_since(tokio::time::Instant::from_std(sent_at));
            deployment.first_byte_timeout.min(left)
        });
        let result = upstream
            .send(request, deployment.connect_timeout, wait, sent_at)
            .await
            .map(|response| response.map(EngineBody::new));
        record.waited(sent_at.elapsed());
        if let Some(trace) = record.trace() {
            match &result {
                Ok(response) => match response.extensions().get::<Connected>() {
                    Some(&Connected(took)) => {
                        trace.connected(sent_at, took);
                        trace.answered(sent_at + took);
                    }
                    None => trace.answered(sent_at),
                },
                Err(error) => trace.failed_attempt(&replica.base, error.label()),
            }
        }
        match result {
            Ok(mut response) => {
                if let Some(error) = refused_status(response.status()) {
                    // Never relayed: the connection is dropped with the answer.
                    note_failure(deployment, index);
                    tracing::warn!(request_id = %String::from_utf8_lossy(ex.request_id.as_bytes()), model = %deployment.model_id, deployment = %deployment.id, replica = %replica.base, status = %response.status(), "engine answered a status Bridge never relays");
                    return Err(naming(deployment, error));
                }
                response.body_mut().limit(deployment.idle_timeout, deadline);
                if response.status().is_server_error() {
                    record.upstream_error(UpstreamFailure::ServerError);
                    note_failure(deployment, index);
                } else {
                    replica.state.record_success();
                }
                response.body_mut().hold(in_flight, slot);
                response.body_mut().cut_by(upstream.cut_signal());
                if endpoint == Endpoint::Responses && response.status().is_success() {
                    // Where this response is, for retrieval and follow-ups by its id.
                    response.body_mut().learn_response_id(Learner {
                        ids: ex.registry.response_ids.clone(),
                        made: Made {
                            model_id: deployment.model_id.clone(),
                            deployment_id: deployment.id.clone(),
                            replica: replica.base.clone(),
                            owner: ex.owner,
                        },
                        start: Vec::new(),
                        fleet: ex.fleet.clone(),
                    });
                }
                return Ok(response);
            }
            Err(error) => {
                if let Some(why) = error.upstream_failure {
                    record.upstream_error(why);
                }
                note_failure(deployment, index);
                if error.retry_safe && retry_possible && deployment.retry_budget.try_retry() {
                    deployment.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(request_id = %String::from_utf8_lossy(ex.request_id.as_bytes()), replica = %replica.base, error = %error.message, "retrying on another replica");
                    tried.push(index);
                    last_error = Some(error);
                } else if let (true, Some(until)) = (error.retry_safe, wake_until) {
                    // No replica reachable yet: park until one may be, then start over.
                    if let Some(newer) = parked(upstream, deployment, until, record).await? {
                        drop(slot);
                        return resend(upstream, ex, endpoint, next, newer).await;
                    }
                    tried.clear();
                } else {
                    // The address is for the operator's log; the client learns which deployment.
                    tracing::warn!(request_id = %String::from_utf8_lossy(ex.request_id.as_bytes()), model = %deployment.model_id, deployment = %deployment.id, replica = %replica.base, error = %error.message, "engine request failed");
                    return Err(naming(deployment, error));
                }
            }
        }
    }
}

/// Parks the request (see [`park`]), noting the wait in its trace. Returns the deployment's
/// newer generation when discovery changed its replicas meanwhile: the request goes there.
async fn parked(
    upstream: &Upstream,
    deployment: &Deployment,
    until: tokio::time::Instant,
    record: &mut Record,
) -> Result<Option<Arc<Deployment>>, ApiError> {
    let start = Instant::now();
    // Boxed: parking is rare, and its state would otherwise make every request's future larger.
    let result = Box::pin(park(upstream, deployment, until)).await;
    if let Some(trace) = record.trace() {
        trace.stage("park", start);
    }
    result.map(|()| deployment.newer())
}

/// Sends again on `newer`, the deployment's generation with the replicas discovered while the
/// request was parked.
async fn resend(
    upstream: &Upstream,
    ex: &mut Exchange,
    endpoint: Endpoint,
    next: Option<(HeaderLines, ReqBody)>,
    newer: Arc<Deployment>,
) -> Result<Response<EngineBody>, ApiError> {
    // A request for a response held by one replica follows that replica into the new list.
    if let Some(index) = ex.pinned {
        let base = ex.deployment.as_ref().and_then(|d| d.replicas.get(index));
        ex.pinned = base.and_then(|r| replica_index(&newer, &r.base));
        if ex.pinned.is_none() {
            return Err(ApiError::bad_gateway(format!(
                "the replica of deployment '{}' of model '{}' that holds the response this \
                 request needs is gone",
                newer.id, newer.model_id
            )));
        }
    }
    ex.record.set_deployment(newer.clone());
    ex.deployment = Some(newer);
    let (headers, body) = next.unwrap_or_default();
    Box::pin(send(upstream, ex, endpoint, headers, body)).await
}

/// The 503 for a deployment none of whose replicas may take a request.
fn no_ready_replica(deployment: &Deployment) -> ApiError {
    let why = match (deployment.replicas.len(), &deployment.dns) {
        (0, Some(_)) => "its DNS names have resolved to no address yet",
        (0, None) => "it has no replicas",
        _ => "no replica has passed its health check yet",
    };
    ApiError::no_ready_replica(format!(
        "deployment '{}' of model '{}' has no replica ready: {why}",
        deployment.id, deployment.model_id
    ))
}

/// The 502 for an answer no client should get: a redirect (the official SDKs follow it, and
/// would send the prompt to wherever the engine points, its `Location` is never passed on) or a
/// protocol switch (any 1xx but 100, which hyper handles itself).
fn refused_status(status: StatusCode) -> Option<ApiError> {
    let (what, code) = if status.is_redirection() {
        (
            "a redirect, which Bridge does not follow or relay",
            "upstream_redirect",
        )
    } else if status.is_informational() {
        (
            "a protocol switch, which Bridge does not relay",
            "upstream_upgrade",
        )
    } else {
        return None;
    };
    Some(ApiError::bad_gateway(format!("the engine answered {status}: {what}")).with_code(code))
}

/// `error` with the deployment it happened on (never the replica's address) in its message.
fn naming(deployment: &Deployment, mut error: ApiError) -> ApiError {
    error.message = format!(
        "deployment '{}' of model '{}': {}",
        deployment.id, deployment.model_id, error.message
    )
    .into();
    error
}

/// 429 with `retry-after`: the SDKs wait and retry on their own.
fn overloaded(deployment: &Deployment, why: Overloaded) -> ApiError {
    let reason = match why {
        Overloaded::QueueFull => "its queue is full",
        Overloaded::WaitedTooLong => "no slot freed up in time",
    };
    ApiError::overloaded(format!(
        "deployment '{}' of model '{}' is at its concurrency limit and {reason}; retry shortly",
        deployment.id, deployment.model_id
    ))
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

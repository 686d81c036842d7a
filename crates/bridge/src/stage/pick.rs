//! Pick: which replica serves a request, or, while none can, how long it waits.
//!
//! - **Least outstanding requests, power of two choices**: two distinct replicas are drawn at
//!   random and the one with fewer requests in flight wins (ties go to the first draw, itself
//!   random), so a slow replica, which accumulates requests, gets less new work. Ejected and
//!   unhealthy replicas are skipped unless no other is left: trying is better than refusing.
//! - **Parking** (opt-in with `wake_timeout_ms`) holds a request while no replica can take it,
//!   the way the hosted service parks requests for a deployment scaled to zero: bounded in
//!   number, with a wake URL called once per wake-up, and a 503 with `retry-after` when the wait
//!   runs out. A passing health check ([`crate::upstream::health`]) wakes parked requests.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request};
use tokio::time::Instant;

use crate::body::ReqBody;
use crate::config::registry::Deployment;
use crate::error::ApiError;
use crate::upstream::client::Upstream;
use crate::upstream::health::PROBE_TIMEOUT;

/// How often a parked request looks again when the deployment has no health checks to wake it.
const PARKED_POLL: Duration = Duration::from_millis(500);
/// `retry-after` on a 503 for a deployment that is still waking.
const WAKING_RETRY_AFTER_SECONDS: u32 = 5;

/// Picks a replica not in `tried`: least outstanding of two random candidates, skipping ejected
/// replicas unless no other is left. `None` when every replica was tried.
pub fn pick(deployment: &Deployment, tried: &[usize]) -> Option<usize> {
    let replicas = &deployment.replicas;
    if replicas.len() == 1 {
        return (tried.is_empty() && !replicas[0].state.is_joining()).then_some(0);
    }
    // A discovered address that has not passed a health check yet is never tried.
    let untried = |i: &usize| !tried.contains(i) && !replicas[*i].state.is_joining();
    let healthy: Vec<usize> = (0..replicas.len())
        .filter(untried)
        .filter(|&i| replicas[i].state.is_available())
        .collect();
    let candidates = if healthy.is_empty() {
        (0..replicas.len()).filter(untried).collect()
    } else {
        healthy
    };
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (a, b) = (candidates[a], candidates[b]);
            Some(
                if replicas[b].state.outstanding() < replicas[a].state.outstanding() {
                    b
                } else {
                    a
                },
            )
        }
    }
}

/// Holds a request until a replica of `deployment` may be ready, or `until` passes (503).
/// Calls the wake URL once per wake-up. Returns at once when the deployment does not park.
pub async fn park(
    upstream: &Upstream,
    deployment: &Deployment,
    until: Instant,
) -> Result<(), ApiError> {
    let Some(wake) = &deployment.wake else {
        return Ok(());
    };
    let waking = |why: &str| {
        ApiError::waking(
            format!(
                "deployment '{}' of model '{}' is not ready: {why}",
                deployment.id, deployment.model_id
            ),
            WAKING_RETRY_AFTER_SECONDS,
        )
    };
    if Instant::now() >= until {
        return Err(waking("it did not become ready in time"));
    }
    let place = wake
        .parked
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < wake.max_parked).then_some(n + 1)
        });
    if place.is_err() {
        return Err(waking("too many requests are already waiting for it"));
    }
    // Released however this ends, a client that leaves while parked included.
    let _parked = Parked(&wake.parked);
    let notified = deployment.ready.notified();
    if let Some(url) = &wake.url {
        if !wake.called.swap(true, Ordering::Relaxed) {
            let mut request = Request::new(ReqBody::empty());
            *request.method_mut() = Method::POST;
            *request.uri_mut() = url.clone();
            tracing::info!(deployment = %deployment.id, url = %url, "calling the wake URL");
            if let Err(e) = upstream.send(request, PROBE_TIMEOUT, PROBE_TIMEOUT).await {
                tracing::warn!(deployment = %deployment.id, error = %e.message, "wake URL failed");
            }
        }
    }
    // Woken by a passing health check, or by looking again shortly (without checks, or after
    // a reload replaced this deployment's checker).
    let step = PARKED_POLL;
    let _ = tokio::time::timeout(
        step.min(until.saturating_duration_since(Instant::now())),
        notified,
    )
    .await;
    Ok(())
}

/// One parked request, counted for as long as it lives.
struct Parked<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

//! Active health checks and parking.
//!
//! Each replica of a deployment with checks on is probed every `health_interval_ms` at its
//! server root (`GET http://host:8000/health` for a replica `http://host:8000/v1`, where vLLM,
//! SGLang and llama.cpp answer 200 while the engine is alive). Consecutive results flip the
//! replica's verdict (see [`crate::balance::ReplicaState::record_check`]); an unhealthy replica
//! gets no work, and a passing check re-admits an ejected one and wakes parked requests.
//!
//! Parking (opt-in with `wake_timeout_ms`) holds a request while no replica can take it, the way
//! the hosted service parks requests for a deployment scaled to zero: bounded in number, with a
//! wake URL called once per wake-up, and a 503 with `retry-after` when the wait runs out.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::ReqBody;
use crate::error::ApiError;
use crate::live::Live;
use crate::pool::Pool;
use crate::registry::{Deployment, Registry};
use crate::upstream::Upstream;

/// Longest wait for one health answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a parked request looks again when the deployment has no health checks to wake it.
const PARKED_POLL: Duration = Duration::from_millis(500);
/// `retry-after` on a 503 for a deployment that is still waking.
const WAKING_RETRY_AFTER_SECONDS: u32 = 5;

/// Checks the replicas of the table in force, starting over on each new table (replicas that
/// stayed keep their state: the checks simply go on). Never completes.
pub async fn check_live(live: Arc<Live>) {
    let mut changed = live.subscribe();
    loop {
        let registry = live.load();
        tokio::select! {
            () = check_forever(registry) => std::future::pending::<()>().await,
            result = changed.changed() => {
                if result.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Checks every replica of every deployment with checks on, until the future is dropped.
pub async fn check_forever(registry: Arc<Registry>) {
    let pool = Pool::default();
    let mut checks = Vec::new();
    for model in registry.models.values() {
        for deployment in model.deployments.values().filter(|d| d.health.is_some()) {
            for index in 0..deployment.replicas.len() {
                checks.push(check_replica(pool.clone(), deployment.clone(), index));
            }
        }
    }
    futures_util::future::join_all(checks).await;
}

async fn check_replica(pool: Pool, deployment: Arc<Deployment>, index: usize) {
    let (Some(check), Some(uri)) = (&deployment.health, &deployment.replicas[index].health_uri)
    else {
        return;
    };
    let replica = &deployment.replicas[index];
    loop {
        let passed = probe(&pool, uri.clone(), check.interval.min(PROBE_TIMEOUT)).await;
        match replica
            .state
            .record_check(passed, check.healthy_after, check.unhealthy_after)
        {
            Some(true) => {
                tracing::info!(replica = %replica.base, deployment = %deployment.id, "replica healthy")
            }
            Some(false) => {
                tracing::warn!(replica = %replica.base, deployment = %deployment.id, "replica unhealthy")
            }
            None => {}
        }
        if passed {
            if let Some(wake) = &deployment.wake {
                wake.called.store(false, Ordering::Relaxed);
            }
            deployment.ready.notify_waiters();
        }
        tokio::time::sleep(check.interval).await;
    }
}

async fn probe(pool: &Pool, uri: http::Uri, timeout: Duration) -> bool {
    let mut request = Request::new(ReqBody::empty());
    *request.uri_mut() = uri;
    let answer = async {
        let response = pool.send(request, timeout).await.ok()?;
        let ok = response.status().is_success();
        // Read the (small) body so the connection can be reused for the next probe.
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, answer).await, Ok(Some(true)))
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
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "deployment '{}' of model '{}' is not ready: {why}",
                deployment.id, deployment.model_id
            ),
        )
        .with_code("deployment_waking");
        e.retry_after = Some(WAKING_RETRY_AFTER_SECONDS);
        e
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
    wake.parked.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

//! Active health checks.
//!
//! Each replica of a deployment with checks on is probed every `health_interval_ms` at its
//! server root (`GET http://host:8000/health` for a replica `http://host:8000/v1`, where vLLM,
//! SGLang and llama.cpp answer 200 while the engine is alive). Consecutive results flip the
//! replica's verdict (see [`ReplicaState::record_check`](crate::config::state::ReplicaState::record_check));
//! an unhealthy replica gets no work, and a passing check re-admits an ejected one and wakes
//! requests parked in [`crate::stage::pick::park`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use super::pool::Pool;
use super::request::EngineRequest;
use crate::config::live::Live;
use crate::config::registry::{Deployment, Registry};

/// Longest wait for one health answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks the replicas of the table in force, starting over on each new table (replicas that
/// stayed keep their state: the checks simply go on). Never completes.
pub async fn check_live(live: Arc<Live>) {
    let mut changed = live.subscribe();
    loop {
        let registry = live.load();
        // A table with nothing to check ends its checks at once: wait for the next table then.
        let checks = async {
            check_forever(registry).await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = checks => {}
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

/// Checks every joining replica of `registry` once: discovered replicas that are ready serve
/// from Bridge's first request.
pub async fn check_joining(registry: &Registry) {
    let pool = Pool::default();
    let mut checks = Vec::new();
    for model in registry.models.values() {
        for deployment in model.deployments.values() {
            let Some(check) = &deployment.health else {
                continue;
            };
            for replica in deployment.replicas.iter().filter(|r| r.state.is_joining()) {
                let Some(uri) = replica.health_uri.clone() else {
                    continue;
                };
                let pool = &pool;
                checks.push(async move {
                    let passed = probe(pool, uri, check.interval.min(PROBE_TIMEOUT)).await;
                    replica
                        .state
                        .record_check(passed, check.healthy_after, check.unhealthy_after);
                });
            }
        }
    }
    futures_util::future::join_all(checks).await;
}

async fn probe(pool: &Pool, uri: http::Uri, timeout: Duration) -> bool {
    let request = EngineRequest::bare(http::Method::GET, uri);
    let answer = async {
        let response = pool
            .send(request, timeout, std::time::Instant::now())
            .await
            .ok()?;
        let ok = response.status().is_success();
        // Read the (small) body so the connection can be reused for the next probe.
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, answer).await, Ok(Some(true)))
}

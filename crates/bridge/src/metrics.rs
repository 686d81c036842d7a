//! The record stage: what operators scrape at `GET /metrics` (Prometheus text format).
//!
//! Counters live where the request path already is (atomics on each [`Deployment`] and
//! [`ReplicaState`](crate::balance::ReplicaState)), so recording costs one relaxed atomic add and
//! no lock, label hashing or allocation per request. A scrape walks the routing table and
//! encodes the values with `prometheus-client`; scrapes are rare, requests are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::registry::{Deployment, Registry};

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Per-deployment counters, updated on the request path.
#[derive(Debug, Default)]
pub struct DeploymentCounters {
    /// Requests whose client went away before the answer was complete.
    pub cancellations: AtomicU64,
}

/// Counts a client cancellation for its deployment unless the request ended first. Created
/// once a request knows its deployment; it travels with the request, then with the engine's
/// response body, so whichever of them is dropped while the request is unfinished counts it.
#[derive(Debug)]
pub struct CancelWatch {
    deployment: Option<Arc<Deployment>>,
}

impl CancelWatch {
    pub fn new(deployment: Arc<Deployment>) -> Self {
        CancelWatch {
            deployment: Some(deployment),
        }
    }

    /// The request ended (answered, failed or timed out): dropping it is no cancellation.
    pub fn settle(&mut self) {
        self.deployment = None;
    }
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if let Some(deployment) = self.deployment.take() {
            deployment
                .counters
                .cancellations
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(model = %deployment.model_id, deployment = %deployment.id, "client cancelled; engine request dropped");
        }
    }
}

/// The metrics text for the current routing table.
pub fn render(registry: &Registry) -> String {
    let cancellations = Family::<Labels, Counter>::default();
    let healthy = Family::<Labels, Gauge>::default();
    let ejected = Family::<Labels, Gauge>::default();
    let outstanding = Family::<Labels, Gauge>::default();
    for model in registry.models.values() {
        for d in model.deployments.values() {
            let labels = vec![("model", model.id.clone()), ("deployment", d.id.clone())];
            cancellations
                .get_or_create(&labels)
                .inc_by(d.counters.cancellations.load(Ordering::Relaxed));
            for replica in &d.replicas {
                let mut labels = labels.clone();
                labels.push(("replica", replica.base.clone()));
                let state = &replica.state;
                healthy
                    .get_or_create(&labels)
                    .set(i64::from(state.is_healthy()));
                ejected
                    .get_or_create(&labels)
                    .set(i64::from(state.is_ejected()));
                outstanding
                    .get_or_create(&labels)
                    .set(i64::try_from(state.outstanding()).unwrap_or(i64::MAX));
            }
        }
    }
    let mut metrics = prometheus_client::registry::Registry::with_prefix("bridge");
    metrics.register(
        "client_cancellations",
        "Requests whose client disconnected before the answer was complete; the engine request was dropped at once",
        cancellations,
    );
    metrics.register(
        "replica_healthy",
        "1 while a replica passes its active health checks (or has none), else 0",
        healthy,
    );
    metrics.register(
        "replica_ejected",
        "1 while a replica is ejected after consecutive failures, else 0",
        ejected,
    );
    metrics.register(
        "replica_outstanding_requests",
        "Requests in flight on a replica (streams count until they end)",
        outstanding,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &metrics);
    out
}

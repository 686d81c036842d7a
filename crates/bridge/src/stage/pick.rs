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

use http::Method;
use tokio::time::Instant;

use crate::config::registry::Deployment;
use crate::error::ApiError;
use crate::upstream::client::Upstream;
use crate::upstream::health::PROBE_TIMEOUT;
use crate::upstream::request::EngineRequest;

/// How often a parked request looks again when the deployment has no health checks to wake it.
const PARKED_POLL: Duration = Duration::from_millis(500);
/// `retry-after` on a 503 for a deployment that is still waking.
const WAKING_RETRY_AFTER_SECONDS: u32 = 5;

/// Picks a replica not in `tried`, skipping ejected and unhealthy replicas unless no other is
/// left (and joining ones always): with an `affinity` key (`balance = "prefix"`), the replica
/// the key prefers within the load bound; else the less loaded of two random candidates.
/// `None` when every replica was tried.
pub fn pick(deployment: &Deployment, tried: &[usize], affinity: Option<u64>) -> Option<usize> {
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
    let candidates: Vec<usize> = if healthy.is_empty() {
        (0..replicas.len()).filter(untried).collect()
    } else {
        healthy
    };
    if let Some(key) = affinity {
        return preferred(deployment, &candidates, key);
    }
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

/// Rendezvous hashing with bounded load: of the candidates with fewer requests in flight than
/// `load_factor` times the mean (this request included), the one whose hash with `key` is
/// highest. Every instance ranks replicas the same for a key, so a conversation stays on one
/// replica across a fleet; a replica that joins or leaves moves only the keys it ranks first
/// for; a hot key spills to its next choice instead of overloading its first.
fn preferred(deployment: &Deployment, candidates: &[usize], key: u64) -> Option<usize> {
    let replicas = &deployment.replicas;
    let load = |i: usize| replicas[i].state.outstanding();
    let total: usize = candidates.iter().map(|&i| load(i)).sum();
    let mean = (total + 1) as f64 / candidates.len().max(1) as f64;
    let bound = (mean * deployment.load_factor).ceil() as usize;
    candidates
        .iter()
        .copied()
        .filter(|&i| load(i) < bound)
        .max_by_key(|&i| mix(key ^ replicas[i].key))
        .or_else(|| candidates.iter().copied().min_by_key(|&i| load(i)))
}

/// SplitMix64's finalizer: every bit of the input moves every bit of the output, so
/// `key ^ replica` ranks replicas independently for each key.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
            let request = EngineRequest::bare(Method::POST, url.clone());
            tracing::info!(deployment = %deployment.id, url = %url, "calling the wake URL");
            if let Err(e) = upstream
                .send(
                    request,
                    PROBE_TIMEOUT,
                    PROBE_TIMEOUT,
                    std::time::Instant::now(),
                )
                .await
            {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::state::InFlight;
    use crate::config::Config;

    fn deployment(replicas: usize) -> Arc<Deployment> {
        let list: Vec<String> = (0..replicas)
            .map(|i| format!("\"http://10.0.0.{}:8000/v1\"", i + 1))
            .collect();
        let text = format!(
            "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [{}]\nbalance = \"prefix\"\n",
            list.join(",")
        );
        let registry = Config::parse(&text, "t").unwrap().validate("t").unwrap();
        registry.model("m").unwrap().deployments["d"].clone()
    }

    fn base(d: &Deployment, key: u64) -> &str {
        &d.replicas[pick(d, &[], Some(key)).unwrap()].base
    }

    #[test]
    fn a_key_always_lands_on_the_same_replica_and_keys_spread() {
        let d = deployment(4);
        let mut per_replica = [0usize; 4];
        for key in 0..4000u64 {
            let k = xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes());
            let first = pick(&d, &[], Some(k)).unwrap();
            assert_eq!(pick(&d, &[], Some(k)), Some(first));
            per_replica[first] += 1;
        }
        for n in per_replica {
            assert!((800..1200).contains(&n), "{per_replica:?}");
        }
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_keys() {
        let four = deployment(4);
        let three = deployment(3); // the same replicas but 10.0.0.4
        for key in 0..2000u64 {
            let k = xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes());
            let before = base(&four, k);
            if before != "http://10.0.0.4:8000/v1" {
                assert_eq!(before, base(&three, k), "key {key} moved");
            }
        }
    }

    #[test]
    fn a_hot_replica_spills_to_the_next_choice() {
        let d = deployment(2);
        let key = 42;
        let first = pick(&d, &[], Some(key)).unwrap();
        let other = 1 - first;
        // In flight: 3 on the preferred replica, 0 on the other. Mean with this request: 2;
        // the bound (1.25 × 2, rounded up) is 3, which the preferred replica has reached.
        let held: Vec<InFlight> = (0..3)
            .map(|_| InFlight::new(d.replicas[first].state.clone()))
            .collect();
        assert_eq!(pick(&d, &[], Some(key)), Some(other));
        drop(held);
        assert_eq!(pick(&d, &[], Some(key)), Some(first));
        // Tried already: the next choice, as with any balancing.
        assert_eq!(pick(&d, &[first], Some(key)), Some(other));
    }
}

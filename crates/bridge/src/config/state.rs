//! What the request path learns about replicas and deployments while serving, kept in the
//! registry so that every worker sees the same: load, health, ejection, retries, concurrency.
//!
//! - **Load**: requests in flight per replica ([`InFlight`] counts one for as long as it lives).
//! - **Passive ejection**: after `eject_after` consecutive failures (connect errors, broken
//!   connections, timeouts, 5xx) a replica gets no new work for a backoff that doubles with each
//!   ejection (1 s up to 60 s) and resets on the next success. If every replica is ejected, they
//!   are all candidates again: trying is better than refusing.
//! - **Retry budget**: retries of requests that never reached an engine are limited per
//!   deployment to 20% of its requests in the current second, with a floor of 10 per second, so
//!   retries cannot multiply an outage.
//!
//! Counters are atomics: every worker sees the same load and health without a lock. Picking a
//! replica from them is [`crate::stage::pick`]'s business.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// First ejection's length; each further one doubles it.
const EJECT_BASE: Duration = Duration::from_secs(1);
/// Longest ejection.
const EJECT_MAX: Duration = Duration::from_secs(60);
/// Retries allowed per second whatever the load, so a quiet deployment can still fail over.
const RETRY_FLOOR_PER_SECOND: u64 = 10;
/// Retries allowed as a share of requests (1 in 5: at most 20% extra load).
const RETRY_RATIO: u64 = 5;

fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// Milliseconds from the process's first reading to `at`.
fn ms_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_millis() as u64
}

/// Load and health of one replica, shared by all workers.
#[derive(Debug)]
pub struct ReplicaState {
    outstanding: AtomicUsize,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Verdict of the active health checks (healthy until checks say otherwise).
    healthy: AtomicBool,
    /// Consecutive checks agreeing against the current verdict.
    check_streak: AtomicU32,
    /// A discovered address that has not passed a health check yet: it gets no request, not
    /// even when no replica is available.
    joining: AtomicBool,
}

impl Default for ReplicaState {
    fn default() -> Self {
        ReplicaState {
            outstanding: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            joining: AtomicBool::new(false),
        }
    }
}

impl ReplicaState {
    /// A replica that joins once a health check passes.
    pub fn joining() -> Self {
        ReplicaState {
            healthy: AtomicBool::new(false),
            joining: AtomicBool::new(true),
            ..Default::default()
        }
    }

    /// Not yet checked: no request may go there.
    pub fn is_joining(&self) -> bool {
        self.joining.load(Ordering::Relaxed)
    }

    /// Whether the replica may get new work: healthy and not ejected.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected()
    }

    /// The verdict of the active health checks.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records an active check; returns the new verdict when it changed. A passing check that
    /// makes (or keeps) the replica healthy also ends an ejection: it is re-admitted.
    pub fn record_check(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        if passed && self.joining.swap(false, Ordering::Relaxed) {
            // One passing check lets a new address in: it has no history to outlive.
            self.healthy.store(true, Ordering::Relaxed);
            return Some(true);
        }
        let healthy = self.healthy.load(Ordering::Relaxed);
        if passed == healthy {
            self.check_streak.store(0, Ordering::Relaxed);
            if passed {
                self.ejected_until_ms.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let needed = if passed {
            healthy_after
        } else {
            unhealthy_after
        };
        if self.check_streak.fetch_add(1, Ordering::Relaxed) + 1 < needed.max(1) {
            return None;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.healthy.store(passed, Ordering::Relaxed);
        if passed {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
        Some(passed)
    }

    /// Requests in flight on the replica now.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Skipped for new work after consecutive failures, until its backoff ends.
    pub fn is_ejected(&self) -> bool {
        // Never ejected (or a check passed since): no clock reading, which the balancer would
        // otherwise make for every replica of every request.
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// A successful answer: the failure streak and the backoff start over.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; the `eject_after`-th in a row ejects the replica. Returns the backoff
    /// when this failure ejected it.
    pub fn record_failure(&self, eject_after: u32) -> Option<Duration> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < eject_after.max(1) {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(6);
        let backoff = (EJECT_BASE * 2u32.pow(n)).min(EJECT_MAX);
        self.ejected_until_ms
            .store(now_ms() + backoff.as_millis() as u64, Ordering::Relaxed);
        Some(backoff)
    }
}

/// Counts a request against a replica for as long as the value lives (the response body holds
/// it, so a stream counts until it ends).
#[derive(Debug)]
pub struct InFlight(Arc<ReplicaState>);

impl InFlight {
    /// Counts one more request on `replica` until dropped.
    pub fn new(replica: Arc<ReplicaState>) -> Self {
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(replica)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-deployment retry allowance over one-second windows.
#[derive(Debug, Default)]
pub struct RetryBudget {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn roll(&self, second: u64) {
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request toward the allowance of the second `at` (the caller's reading of the
    /// clock) falls in.
    pub fn record_request(&self, at: Instant) {
        self.record_request_at(ms_at(at) / 1000);
    }

    /// Takes one retry from the budget if there is one left this second.
    pub fn try_retry(&self) -> bool {
        self.try_retry_at(now_ms() / 1000)
    }

    fn record_request_at(&self, second: u64) {
        self.roll(second);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry_at(&self, second: u64) -> bool {
        self.roll(second);
        let allowed =
            (self.requests.load(Ordering::Relaxed) / RETRY_RATIO).max(RETRY_FLOOR_PER_SECOND);
        // Count only granted retries: a refused one must not use up the allowance.
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok()
    }
}

/// An optional cap on a deployment's requests in flight, with a bounded queue in front of it.
#[derive(Debug)]
pub struct Limiter {
    permits: Arc<tokio::sync::Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
    queue_timeout: Duration,
}

/// Why a request could not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloaded {
    /// Every queue place is taken.
    QueueFull,
    /// No slot freed up within the queue timeout.
    WaitedTooLong,
}

impl Limiter {
    /// At most `max_concurrent` in flight, `max_queued` waiting up to `queue_timeout`.
    pub fn new(max_concurrent: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Limiter {
            permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
            max_queued,
            queued: AtomicUsize::new(0),
            queue_timeout,
        }
    }

    /// A slot, at once or after waiting in the queue; held until the response body is gone.
    pub async fn acquire(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Overloaded> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let place = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_queued).then_some(n + 1)
            });
        if place.is_err() {
            return Err(Overloaded::QueueFull);
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Overloaded::WaitedTooLong),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_after_consecutive_failures_with_doubling_backoff() {
        let state = ReplicaState::default();
        assert!(!state.is_ejected());
        assert_eq!(state.record_failure(3), None);
        assert_eq!(state.record_failure(3), None);
        assert_eq!(state.record_failure(3), Some(Duration::from_secs(1)));
        assert!(state.is_ejected());
        for _ in 0..2 {
            state.record_failure(3);
        }
        assert_eq!(state.record_failure(3), Some(Duration::from_secs(2)));
        state.record_success();
        assert_eq!(
            state.record_failure(1),
            Some(Duration::from_secs(1)),
            "success resets the backoff"
        );
    }

    #[test]
    fn retry_budget_has_a_floor_and_a_ratio() {
        let budget = RetryBudget::default();
        budget.record_request_at(7);
        let granted = (0..100).filter(|_| budget.try_retry_at(7)).count();
        assert_eq!(
            granted as u64, RETRY_FLOOR_PER_SECOND,
            "a quiet second still gets the floor"
        );
        for _ in 0..999 {
            budget.record_request_at(7);
        }
        let more = (0..1000).filter(|_| budget.try_retry_at(7)).count();
        assert_eq!(
            more as u64,
            1000 / RETRY_RATIO - RETRY_FLOOR_PER_SECOND,
            "20% of 1,000 requests in all"
        );
        assert!(budget.try_retry_at(8), "a new second, a new budget");
    }
}

//! Limits that hold for a fleet of Bridges: requests and tokens per minute, tokens per day and
//! requests in flight, per key and per model.
//!
//! Every instance keeps, per limited scope, a local token bucket and a lease of the fleet's
//! shared bucket in Redis ([`bucket`]). With Redis up, a request spends from the lease; only
//! when the lease runs short does one script call ([`link`]) take what it needs plus 1% of the
//! limit, from all of the request's limits at once, all or nothing. So at high rates a Redis
//! round trip serves many requests, and a burst spread over `n` instances is admitted within
//! `n`% of the limit (the chunks left unspent), never above it. Concurrency slots are leased
//! the same way, per instance, and a dead instance's slots return when its heartbeat stops.
//!
//! Without Redis, or while it is unreachable or slower than `redis_timeout_ms`, each instance
//! enforces its share of every limit (the limit divided by the live instances at the last
//! heartbeat) and rejoins by itself. Redis trouble never refuses a request by itself.
//!
//! Tokens are reserved up front (an estimate from the body and `max_tokens`) and settled with
//! the engine's usage when the answer ends ([`Admission::settle`]).

pub mod bucket;
mod ids;
pub mod link;
pub mod scope;
mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::quota::{LimitSettings, Quota};
use link::{Entry, Link};
use scope::{Kind, Refused, Scope, Standing};

/// The fleet's limits, as this instance enforces them. One per process, kept across reloads.
#[derive(Debug, Default)]
pub struct Fleet {
    link: Option<Arc<Link>>,
    /// Keys' scopes, then models', by name (looked up without building a string).
    scopes: [Mutex<HashMap<String, Arc<Scope>>>; 2],
    /// Requests refused, by key, model and limit.
    limited: Mutex<HashMap<(String, String, &'static str), u64>>,
}

/// A limited scope a request counts against, with its limits.
pub type Limited = (Arc<Scope>, Quota);

impl Fleet {
    /// The fleet's limits as `settings` say (Redis, or each instance alone).
    pub fn new(settings: &LimitSettings) -> Self {
        Fleet {
            link: settings
                .redis
                .clone()
                .map(|url| Arc::new(Link::new(url, settings.redis_timeout))),
            ..Fleet::default()
        }
    }

    /// The link to Redis, when configured.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.as_ref()
    }

    /// The scope of the key named `name`, made on first use.
    pub fn key_scope(&self, name: &str) -> Arc<Scope> {
        self.scope(0, "key", name)
    }

    /// The scope of the model `id` (every key's requests to it), made on first use.
    pub fn model_scope(&self, id: &str) -> Arc<Scope> {
        self.scope(1, "model", id)
    }

    fn scope(&self, at: usize, kind: &str, name: &str) -> Arc<Scope> {
        let mut scopes = self.scopes[at].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scope) = scopes.get(name) {
            return scope.clone();
        }
        let scope = Arc::new(Scope::new(format!("{kind}:{name}")));
        scopes.insert(name.to_string(), scope.clone());
        scope
    }

    /// Admits a request needing `tokens` against every scope in `limited`, or refuses it with
    /// the limit it does not fit (the index into `limited` and why).
    pub async fn admit(
        &self,
        limited: Vec<Limited>,
        tokens: u64,
    ) -> Result<Admission, (usize, Refused, Rates)> {
        let now = Instant::now();
        if let Some(link) = self.link.as_ref().filter(|l| l.is_up()) {
            match self.admit_shared(link, &limited, tokens, now).await {
                Ok(Ok(())) => return Ok(self.admission(limited, tokens, true, now)),
                Ok(Err((i, refused))) => {
                    let rates = rates(&limited, true, now);
                    return Err((i, refused, rates));
                }
                Err(link::Unreachable(_)) => {}
            }
        }
        // Redis is down: each instance enforces its share. After a single late answer (the
        // link is still up) the request is counted against this instance's own use alone.
        let share = match &self.link {
            Some(link) if !link.is_up() => link.instances(),
            _ => 1,
        };
        for (i, (scope, quota)) in limited.iter().enumerate() {
            if let Err(refused) = scope.take_alone(quota, tokens, share, now) {
                for (scope, quota) in &limited[..i] {
                    scope.untake(quota, tokens, false, now);
                }
                let rates = rates(&limited, false, now);
                return Err((i, refused, rates));
            }
        }
        Ok(self.admission(limited, tokens, false, now))
    }

    async fn admit_shared(
        &self,
        link: &Arc<Link>,
        limited: &[Limited],
        tokens: u64,
        now: Instant,
    ) -> Result<Result<(), (usize, Refused)>, link::Unreachable> {
        let mut entries: Vec<(Kind, Entry)> = Vec::new();
        let mut owners = Vec::new();
        for (i, (scope, quota)) in limited.iter().enumerate() {
            if let Err(refused) = scope.reserve(quota, tokens, now, &mut entries) {
                unreserve(&limited[..i], tokens, now);
                return Ok(Err((i, refused)));
            }
            owners.resize(entries.len(), i);
        }
        if !entries.is_empty() {
            let answer = take(link, limited, &entries, &owners).await;
            if answer.is_err() {
                // Counted alone from here: what the leases gave is given back first.
                unreserve(limited, tokens, now);
            }
            let (ok, grants) = match answer? {
                Some(answer) => answer,
                // Late: admitted on credit. The leases run into debt, which the grant pays
                // when it lands (or later refills do, if Redis refused): the fleet's count
                // stays right.
                None => (true, Vec::new()),
            };
            if !ok {
                let failed = entries
                    .iter()
                    .zip(&grants)
                    .zip(&owners)
                    .find(|(((_, e), g), _)| g.left < e.min);
                if let Some((((kind, entry), granted), &i)) = failed {
                    let wait = if entry.min > entry.capacity {
                        bucket::Wait::Never
                    } else {
                        bucket::Wait::For(granted.wait)
                    };
                    let refused = Refused {
                        kind: *kind,
                        limit: entry.capacity,
                        wait,
                    };
                    unreserve(limited, tokens, now);
                    return Ok(Err((i, refused)));
                }
            }
        }
        Ok(Ok(()))
    }

    fn admission(
        &self,
        limited: Vec<Limited>,
        tokens: u64,
        shared: bool,
        now: Instant,
    ) -> Admission {
        Admission {
            rates: rates(&limited, shared, now),
            limited,
            tokens,
            shared,
            link: self.link.clone(),
        }
    }

    /// Counts a refused request.
    pub fn count_limited(&self, key: &str, model: &str, limit: &'static str) {
        let mut limited = self.limited.lock().unwrap_or_else(|e| e.into_inner());
        *limited
            .entry((key.to_string(), model.to_string(), limit))
            .or_default() += 1;
    }

    /// Requests refused so far, by key, model and limit.
    pub fn limited(&self) -> Vec<((String, String, &'static str), u64)> {
        let limited = self.limited.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = limited.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// Keeps the link to Redis up (never completes; returns at once without Redis): when it
    /// comes back, the slots in use are registered again before the shared counters are used.
    pub async fn keep_up(self: Arc<Self>) {
        let Some(link) = self.link.clone() else {
            return;
        };
        link.keep_up(|reset| {
            let fleet = self.clone();
            let link = link.clone();
            async move {
                let scopes: Vec<_> = fleet
                    .scopes
                    .iter()
                    .flat_map(|m| {
                        let m = m.lock().unwrap_or_else(|e| e.into_inner());
                        m.values().cloned().collect::<Vec<_>>()
                    })
                    .collect();
                for scope in scopes {
                    scope.resync(&link, reset).await?;
                }
                Ok(())
            }
        })
        .await;
    }
}

/// Gives back what the scopes of `limited` reserved.
fn unreserve(limited: &[Limited], tokens: u64, now: Instant) {
    for (scope, quota) in limited {
        scope.untake(quota, tokens, true, now);
    }
}

/// Asks Redis for `entries` (each for the scope `owners` names), waiting at most the link's
/// timeout. The call runs on by itself, so an answer later than that still lands in the
/// leases; `None` when it is late and the link still counts as up.
async fn take(
    link: &Arc<Link>,
    limited: &[Limited],
    entries: &[(Kind, Entry)],
    owners: &[usize],
) -> Result<Option<(bool, Vec<link::Granted>)>, link::Unreachable> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let asked: Vec<Entry> = entries.iter().map(|(_, e)| e.clone()).collect();
    let scopes: Vec<(Arc<Scope>, Kind)> = owners
        .iter()
        .zip(entries)
        .map(|(&i, (kind, _))| (limited[i].0.clone(), *kind))
        .collect();
    let call = link.clone();
    tokio::spawn(async move {
        let answer = call.take(&asked).await;
        if let Ok((_, grants)) = &answer {
            let now = Instant::now();
            for ((scope, kind), granted) in scopes.iter().zip(grants) {
                scope.granted(*kind, *granted, now);
            }
        }
        let _ = tx.send(answer);
    });
    match tokio::time::timeout(link.timeout(), rx).await {
        Ok(Ok(answer)) => answer.map(Some),
        Ok(Err(_)) => Err(link::Unreachable("the Redis call was dropped".into())),
        Err(_) => {
            let late = link.late();
            if link.is_up() {
                Ok(None)
            } else {
                Err(late)
            }
        }
    }
}

/// Where a request's limits stand: for the `x-ratelimit-*` headers, the request limit and the
/// token limit closest to refusing, each as limit, remaining and time until whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// `x-ratelimit-*-requests`.
    pub requests: Option<Standing>,
    /// `x-ratelimit-*-tokens`.
    pub tokens: Option<Standing>,
}

fn rates(limited: &[Limited], shared: bool, now: Instant) -> Rates {
    let mut rates = Rates::default();
    for (scope, _) in limited {
        let [requests, tokens] = scope.standing(shared, now);
        for (mine, theirs) in [(&mut rates.requests, requests), (&mut rates.tokens, tokens)] {
            if let Some(s) = theirs {
                if mine.is_none_or(|m| s.1 < m.1) {
                    *mine = Some(s);
                }
            }
        }
    }
    rates
}

/// An admitted request's hold on its limits, given back when it ends: its slot, and its token
/// reservation settled against what the engine reported.
#[derive(Debug)]
pub struct Admission {
    limited: Vec<Limited>,
    tokens: u64,
    shared: bool,
    link: Option<Arc<Link>>,
    /// Where the limits stood once it was admitted.
    pub rates: Rates,
}

impl Admission {
    /// The request is over: `used` tokens, as the engine reported them; `None` when it did not
    /// (the reservation stays spent: the engine may have worked on it).
    pub fn settle(self, used: Option<u64>) {
        let now = Instant::now();
        // Engines' counts are clamped like estimates: no report can overflow the accounting.
        let clamp = |n: u64| n.min(1 << 50) as i64;
        let delta = used.map_or(0, |used| clamp(self.tokens.max(1)) - clamp(used));
        for (scope, quota) in &self.limited {
            scope.settle(quota, delta, self.shared, self.link.as_deref(), now);
        }
    }
}

#[cfg(test)]
#[path = "fleet/fleet_tests.rs"]
mod tests;

//! One limited scope (a key, or a model for every key): its four limits and what this instance
//! holds of each, counted alone (no Redis, or Redis down) or as leases of the fleet's buckets.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bucket::{Bucket, Lease, Wait};
use super::link::{Entry, Granted, Link, PREFIX};
use crate::config::quota::Quota;

/// A limit, by what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Tokens per day.
    Tpd,
    /// Requests in flight.
    Concurrent,
}

/// The three bucket limits, in the order a scope keeps them.
const BUCKETS: [Kind; 3] = [Kind::Rpm, Kind::Tpm, Kind::Tpd];

impl Kind {
    /// The name in the config file and in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::Tpd => "tpd",
            Kind::Concurrent => "max_concurrent",
        }
    }

    /// It counts tokens (else requests).
    pub fn is_tokens(self) -> bool {
        matches!(self, Kind::Tpm | Kind::Tpd)
    }

    fn period(self) -> Duration {
        match self {
            Kind::Tpd => Duration::from_secs(86_400),
            _ => Duration::from_secs(60),
        }
    }

    fn of(self, quota: &Quota) -> Option<u64> {
        match self {
            Kind::Rpm => quota.rpm,
            Kind::Tpm => quota.tpm,
            Kind::Tpd => quota.tpd,
            Kind::Concurrent => quota.max_concurrent,
        }
    }
}

/// A request that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The limit that refused it.
    pub kind: Kind,
    /// Its value.
    pub limit: u64,
    /// How long until the request would fit.
    pub wait: Wait,
}

/// A limit's value, what is left and when it is whole again: one `x-ratelimit-*` triple.
pub type Standing = (u64, u64, Duration);

/// One scope's limits and what this instance holds of them.
#[derive(Debug)]
pub struct Scope {
    /// `key:{name}` or `model:{id}`: the Redis keys' middle part.
    id: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    quota: Quota,
    /// The local buckets (counting alone, at `share` of the limit) and leases, by [`BUCKETS`].
    buckets: [Option<(Bucket, Lease)>; 3],
    /// Slots in use here.
    in_use: u64,
    /// Slots this instance holds in Redis.
    reserved: u64,
    /// The last request counted in Redis: counting alone starts from the fleet's view.
    was_shared: bool,
}

impl Scope {
    /// The scope named `id`.
    pub fn new(id: String) -> Self {
        Scope {
            id,
            state: Mutex::new(State {
                quota: Quota::default(),
                buckets: [None, None, None],
                in_use: 0,
                reserved: 0,
                was_shared: false,
            }),
        }
    }

    fn key(&self, kind: Kind) -> String {
        format!("{PREFIX}{}:{}", self.id, kind.label())
    }

    fn lock(&self, quota: &Quota, share: u64, now: Instant) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update: the counts stay usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.quota != *quota {
            state.quota = *quota;
        }
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            match (kind.of(quota), slot.as_mut()) {
                (None, _) => *slot = None,
                (Some(limit), None) => {
                    *slot = Some((
                        Bucket::new(limit.div_ceil(share), kind.period(), now),
                        Lease::default(),
                    ))
                }
                (Some(limit), Some((bucket, _))) => {
                    if bucket.capacity() != limit.div_ceil(share) {
                        bucket.resize(limit.div_ceil(share), now);
                    }
                }
            }
        }
        state
    }

    /// Counting alone, at `1/share` of each limit: takes what the request needs from every
    /// limit, or nothing. Right after Redis was lost (`share` above 1), the local buckets start
    /// from this instance's share of what the fleet had left.
    pub fn take_alone(
        &self,
        quota: &Quota,
        tokens: u64,
        share: u64,
        now: Instant,
    ) -> Result<(), Refused> {
        let mut state = self.lock(quota, share, now);
        if share > 1 && std::mem::take(&mut state.was_shared) {
            // Redis was just lost: this instance's share of what the fleet had left.
            for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
                if let (Some((bucket, lease)), Some(limit)) = (slot.as_mut(), kind.of(quota)) {
                    let left = lease.remaining((limit, kind.period()), now) / share;
                    let now_left = bucket.remaining(now) as i64;
                    bucket.adjust(left as i64 - now_left, now);
                }
            }
        }
        // Every limit is checked before any is taken from: all or nothing.
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let Some((bucket, _)) = slot {
                let (n, limit) = (need(kind, tokens), kind.of(quota).unwrap_or_default());
                bucket.check(n, now).map_err(|wait| Refused {
                    kind,
                    limit,
                    // Larger than this instance's share, not than the limit: it fits once
                    // Redis is back.
                    wait: match wait {
                        Wait::Never if n <= limit => Wait::For(kind.period()),
                        wait => wait,
                    },
                })?;
            }
        }
        if let Some(max) = quota.max_concurrent {
            if state.in_use >= max.div_ceil(share) {
                return Err(Refused {
                    kind: Kind::Concurrent,
                    limit: max,
                    wait: Wait::For(Duration::from_secs(1)),
                });
            }
        }
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let Some((bucket, _)) = slot {
                bucket.adjust(-(need(kind, tokens) as i64), now);
            }
        }
        if quota.max_concurrent.is_some() {
            state.in_use += 1;
        }
        Ok(())
    }

    /// Gives back what [`Scope::take_alone`] took (another scope refused the request).
    pub fn untake_alone(&self, tokens: u64, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let Some((bucket, _)) = slot {
                bucket.adjust(need(kind, tokens) as i64, now);
            }
        }
        if state.quota.max_concurrent.is_some() {
            state.in_use = state.in_use.saturating_sub(1);
        }
    }

    /// With Redis: what to ask of the fleet's limits, added to `entries` (nothing when the
    /// leases cover the request). Refused at once when a shared bucket, as last seen, cannot
    /// have refilled enough.
    pub fn plan(
        &self,
        quota: &Quota,
        tokens: u64,
        now: Instant,
        entries: &mut Vec<(Kind, Entry)>,
    ) -> Result<(), Refused> {
        let mut state = self.lock(quota, 1, now);
        state.was_shared = true;
        for (slot, kind) in state.buckets.iter().zip(BUCKETS) {
            let (Some((_, lease)), Some(limit)) = (slot, kind.of(quota)) else {
                continue;
            };
            let Some(ask) = lease.ask(need(kind, tokens), limit) else {
                continue;
            };
            lease
                .may_fit(ask.min, (limit, kind.period()), now)
                .map_err(|wait| Refused { kind, limit, wait })?;
            entries.push((
                kind,
                Entry {
                    key: self.key(kind),
                    slots: false,
                    capacity: limit,
                    period: kind.period(),
                    min: ask.min,
                    want: ask.want,
                },
            ));
        }
        if let Some(max) = quota.max_concurrent {
            if state.in_use >= state.reserved {
                entries.push((
                    Kind::Concurrent,
                    Entry {
                        key: self.key(Kind::Concurrent),
                        slots: true,
                        capacity: max,
                        period: Duration::ZERO,
                        min: 1,
                        want: 1 + max / 100,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Redis's answer to what [`Scope::plan`] asked for `kind`.
    pub fn granted(&self, kind: Kind, granted: Granted, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match BUCKETS.iter().position(|k| *k == kind) {
            Some(i) => {
                if let Some((_, lease)) = state.buckets[i].as_mut() {
                    lease.granted(granted.granted, granted.left, now);
                }
            }
            None => state.reserved += granted.granted,
        }
    }

    /// With Redis, the leases (refilled by [`Scope::granted`]) now cover the request: spends
    /// them. Requests racing here may overdraw a lease; the next refill pays the debt.
    pub fn take_shared(&self, quota: &Quota, tokens: u64, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let Some((bucket, lease)) = slot {
                lease.held -= need(kind, tokens) as i64;
                // The local bucket follows this instance's use, so that counting alone after
                // Redis is lost starts from it, not from a full bucket.
                bucket.adjust(-(need(kind, tokens) as i64), now);
            }
        }
        if quota.max_concurrent.is_some() {
            state.in_use += 1;
        }
    }

    /// The request is over: `delta` tokens come back (or are charged, below zero), and its
    /// slot is freed. With Redis, slots held beyond a chunk go back to the fleet.
    pub fn settle(&self, delta: i64, shared: bool, link: Option<&Link>, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let (Some((bucket, lease)), true) = (slot, kind.is_tokens()) {
                if shared {
                    lease.held += delta;
                }
                bucket.adjust(delta, now);
            }
        }
        let Some(max) = state.quota.max_concurrent else {
            return;
        };
        state.in_use = state.in_use.saturating_sub(1);
        let spare = state.reserved.saturating_sub(state.in_use);
        if let (Some(link), true) = (link, spare > max / 100) {
            let back = spare - max / 100;
            state.reserved -= back;
            link.give_back(&self.key(Kind::Concurrent), back);
        }
    }

    /// The slots in use here, now registered as this instance's in Redis (after an outage).
    pub async fn rejoin(&self, link: &Link) -> Result<(), super::link::Unreachable> {
        let (limited, in_use) = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.quota.max_concurrent.is_some(), state.in_use)
        };
        if limited {
            link.set_slots(&self.key(Kind::Concurrent), in_use).await?;
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserved = in_use;
        }
        Ok(())
    }

    /// Where the request limit and the token limit that are closest to refusing stand.
    pub fn standing(&self, shared: bool, now: Instant) -> [Option<Standing>; 2] {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let quota = state.quota;
        let mut out = [None, None];
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            let (Some((bucket, lease)), Some(limit)) = (slot.as_mut(), kind.of(&quota)) else {
                continue;
            };
            let (left, reset) = if shared {
                let left = lease.remaining((limit, kind.period()), now);
                let per_unit = kind.period().as_secs_f64() / limit as f64;
                (
                    left,
                    Duration::from_secs_f64((limit - left) as f64 * per_unit),
                )
            } else {
                (bucket.remaining(now), bucket.reset())
            };
            let at = usize::from(kind.is_tokens());
            if out[at].is_none_or(|(_, l, _)| left < l) {
                out[at] = Some((limit, left, reset));
            }
        }
        out
    }
}

/// What a request takes from a limit of `kind`: one request, or its tokens (at least one, so
/// a spent token budget refuses every request).
fn need(kind: Kind, tokens: u64) -> u64 {
    if kind.is_tokens() {
        tokens.max(1)
    } else {
        1
    }
}

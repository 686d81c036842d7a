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
        state.quota = *quota;
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

    /// With Redis: spends what the request needs from the leases (and takes its slot) under
    /// one lock, so that racing requests never pass on the same units, and adds to `entries`
    /// what to ask of the fleet's limits where a lease ran short. Refused at once, taking
    /// nothing, when a shared bucket, as last seen, cannot have refilled enough. A lease in debt
    /// (requests used more than their estimate) asks at most the whole limit: a debt delays
    /// later requests, it never locks them out.
    pub fn reserve(
        &self,
        quota: &Quota,
        tokens: u64,
        now: Instant,
        entries: &mut Vec<(Kind, Entry)>,
    ) -> Result<(), Refused> {
        let mut state = self.lock(quota, 1, now);
        state.was_shared = true;
        let mut asks = [None; 3];
        for ((slot, kind), ask) in state.buckets.iter().zip(BUCKETS).zip(&mut asks) {
            let (Some((_, lease)), Some(limit)) = (slot, kind.of(quota)) else {
                continue;
            };
            let n = need(kind, tokens);
            if n > limit {
                return Err(Refused {
                    kind,
                    limit,
                    wait: Wait::Never,
                });
            }
            *ask = lease.ask(n, limit).map(|mut ask| {
                ask.min = ask.min.min(limit);
                ask.want = ask.want.max(ask.min);
                ask
            });
            if let Some(ask) = ask {
                lease
                    .may_fit(ask.min, (limit, kind.period()), now)
                    .map_err(|wait| Refused { kind, limit, wait })?;
            }
        }
        for ((slot, kind), ask) in state.buckets.iter_mut().zip(BUCKETS).zip(asks) {
            let (Some((bucket, lease)), Some(limit)) = (slot.as_mut(), kind.of(quota)) else {
                continue;
            };
            let n = need(kind, tokens) as i64;
            lease.held -= n;
            // The local bucket follows this instance's use, so that counting alone after
            // Redis is lost starts from it, not from a full bucket.
            bucket.adjust(-n, now);
            if let Some(ask) = ask {
                entries.push((kind, bucket_entry(self.key(kind), limit, kind, ask)));
            }
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
            state.in_use += 1;
        }
        Ok(())
    }

    /// Gives back what [`Scope::take_alone`] (`shared` false) or [`Scope::reserve`] took for
    /// a request admitted with `quota`: another limit, or the fleet, refused it.
    pub fn untake(&self, quota: &Quota, tokens: u64, shared: bool, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let Some((bucket, lease)) = slot {
                if shared {
                    lease.held += need(kind, tokens) as i64;
                }
                bucket.adjust(need(kind, tokens) as i64, now);
            }
        }
        if quota.max_concurrent.is_some() {
            state.in_use = state.in_use.saturating_sub(1);
        }
    }

    /// Redis's answer to what [`Scope::reserve`] asked for `kind`.
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

    /// The request is over: `delta` tokens come back (or are charged, below zero), and its
    /// slot is freed when it took one (`quota`: its limits when admitted, whatever a reload did
    /// since). With Redis up, slots held beyond a chunk go back to the fleet.
    pub fn settle(
        &self,
        quota: &Quota,
        delta: i64,
        shared: bool,
        link: Option<&Link>,
        now: Instant,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, kind) in state.buckets.iter_mut().zip(BUCKETS) {
            if let (Some((bucket, lease)), true) = (slot, kind.is_tokens()) {
                if shared {
                    lease.held += delta;
                }
                bucket.adjust(delta, now);
            }
        }
        if quota.max_concurrent.is_none() {
            return;
        }
        state.in_use = state.in_use.saturating_sub(1);
        let Some(max) = state.quota.max_concurrent else {
            return;
        };
        let spare = state.reserved.saturating_sub(state.in_use);
        // While Redis is down the rejoin sets every count afresh: nothing to give back.
        let link = link.filter(|l| l.is_up());
        if let (Some(link), true) = (link, spare > max / 100) {
            let back = spare - max / 100;
            state.reserved -= back;
            link.give_back(&self.key(Kind::Concurrent), back);
        }
    }

    /// The slots this instance holds, registered afresh as its own in Redis: after an outage
    /// (`reset`: the slots in use, nothing spare) and now and then while up, so that a slot
    /// call lost on the way (a late answer) cannot skew the fleet's count for long.
    pub async fn resync(&self, link: &Link, reset: bool) -> Result<(), super::link::Unreachable> {
        let count = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.quota.max_concurrent.is_none() {
                return Ok(());
            }
            if reset {
                state.reserved = state.in_use;
            }
            state.reserved
        };
        link.set_slots(&self.key(Kind::Concurrent), count).await
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

/// The entry asking a shared bucket for `ask`.
fn bucket_entry(key: String, limit: u64, kind: Kind, ask: super::bucket::Ask) -> Entry {
    Entry {
        key,
        slots: false,
        capacity: limit,
        period: kind.period(),
        min: ask.min,
        want: ask.want,
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

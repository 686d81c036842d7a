//! The arithmetic of limits, with no I/O: a token bucket (what an instance enforces alone), and
//! a lease (the share of a fleet-wide bucket an instance holds and spends without asking Redis).

use std::time::{Duration, Instant};

/// A token bucket: it holds up to `capacity` and refills `capacity` every `period`. A burst of
/// `capacity` passes, then `capacity` per period: exactly "N per minute" as clients read it.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    period_ms: f64,
    level: f64,
    at: Instant,
}

/// Why something does not fit (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It will after this long.
    For(Duration),
    /// It never will: it is larger than the whole limit.
    Never,
}

impl Bucket {
    /// A full bucket.
    pub fn new(capacity: u64, period: Duration, now: Instant) -> Self {
        Bucket {
            capacity: capacity as f64,
            period_ms: period.as_secs_f64() * 1000.0,
            level: capacity as f64,
            at: now,
        }
    }

    /// The limit changed (a reload, or this instance's share of a fleet): what is left stays,
    /// up to the new capacity.
    pub fn resize(&mut self, capacity: u64, now: Instant) {
        self.refill(now);
        self.capacity = capacity as f64;
        self.level = self.level.min(self.capacity);
    }

    /// Its capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        self.level = (self.level + ms * self.capacity / self.period_ms).min(self.capacity);
        self.at = now;
    }

    /// Takes `n` if the bucket holds them; else how long until it will. (Admission checks
    /// every limit before it takes from any: [`Bucket::check`], then [`Bucket::adjust`].)
    #[cfg(test)]
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), Wait> {
        self.check(n, now)?;
        self.level -= n as f64;
        Ok(())
    }

    /// Whether the bucket holds `n`; else how long until it will.
    pub fn check(&mut self, n: u64, now: Instant) -> Result<(), Wait> {
        self.refill(now);
        if n as f64 > self.capacity {
            return Err(Wait::Never);
        }
        if self.level >= n as f64 {
            return Ok(());
        }
        Err(Wait::For(self.time_for(n as f64 - self.level)))
    }

    /// Gives back (`delta > 0`, up to the capacity) or charges (`delta < 0`, even below zero: a
    /// debt the next requests wait for) what a request used beyond its estimate.
    pub fn adjust(&mut self, delta: i64, now: Instant) {
        self.refill(now);
        self.level = (self.level + delta as f64).min(self.capacity);
    }

    /// What is left now, whole units.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.level.max(0.0) as u64
    }

    /// How long until the bucket is full again.
    pub fn reset(&self) -> Duration {
        self.time_for(self.capacity - self.level)
    }

    fn time_for(&self, units: f64) -> Duration {
        let ms = (units.max(0.0) * self.period_ms / self.capacity).ceil();
        Duration::from_millis(ms as u64)
    }
}

/// What an instance holds of a fleet-wide bucket: units taken from Redis in chunks and spent
/// here, and what Redis last said of the shared bucket (so an empty one is not asked again
/// until it can have refilled).
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// Units held; below zero after requests used more than their estimate (a debt the next
    /// refill covers first).
    pub held: i64,
    /// The shared bucket's level when last seen, and when.
    seen: Option<(f64, Instant)>,
}

/// What to ask of the shared bucket: at least `min`, at most `want`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// What the request needs beyond what is held.
    pub min: u64,
    /// That, plus a chunk for the requests after it.
    pub want: u64,
}

impl Lease {
    /// The chunk asked for beyond a request's need: 1% of the limit. A fleet of `n` instances
    /// leaves at most `n` chunks unspent when the shared bucket runs dry, so a burst is
    /// admitted within `n`% of the limit; at high rates, one Redis call serves many requests.
    pub fn chunk(capacity: u64) -> u64 {
        capacity / 100
    }

    /// Nothing to ask when the lease covers `n`; else what to ask the shared bucket for.
    pub fn ask(&self, n: u64, capacity: u64) -> Option<Ask> {
        if self.held >= n as i64 {
            return None;
        }
        let min = (n as i64 - self.held) as u64;
        Some(Ask {
            min,
            want: min + Self::chunk(capacity),
        })
    }

    /// Whether the shared bucket, as last seen and refilled since, may hold `min`; else how
    /// long until it may (a refusal without a Redis call).
    pub fn may_fit(&self, min: u64, bucket: (u64, Duration), now: Instant) -> Result<(), Wait> {
        let (capacity, period) = bucket;
        if min > capacity {
            return Err(Wait::Never);
        }
        let Some((level, at)) = self.seen else {
            return Ok(());
        };
        let rate = capacity as f64 / (period.as_secs_f64() * 1000.0);
        let now_level = level + now.saturating_duration_since(at).as_secs_f64() * 1000.0 * rate;
        if now_level >= min as f64 {
            return Ok(());
        }
        let ms = ((min as f64 - now_level) / rate).ceil();
        Err(Wait::For(Duration::from_millis(ms as u64)))
    }

    /// Redis answered: `granted` units are now held, and the shared bucket holds `level`.
    pub fn granted(&mut self, granted: u64, level: u64, now: Instant) {
        self.held += granted as i64;
        self.seen = Some((level as f64, now));
    }

    /// What is left, as this instance sees it: the shared level refilled since, plus what it
    /// holds.
    pub fn remaining(&self, bucket: (u64, Duration), now: Instant) -> u64 {
        let (capacity, period) = bucket;
        let shared = self.seen.map_or(capacity as f64, |(level, at)| {
            let ms = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
            (level + ms * capacity as f64 / (period.as_secs_f64() * 1000.0)).min(capacity as f64)
        });
        (shared + self.held as f64).clamp(0.0, capacity as f64) as u64
    }
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;

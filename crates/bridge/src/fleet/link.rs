//! The link to the fleet's Redis: one script call that takes from every shared limit a request
//! needs at once, slot returns and heartbeats sent off the request path, and the state of the
//! link (up, or down and counting alone), which nothing on the request path ever waits for
//! longer than the configured timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::scripts::{HEARTBEAT, RETURN, TAKE};

/// Prefix of every key Bridge writes.
pub const PREFIX: &str = "bridge:";
/// The sorted set of instances by their last heartbeat (Redis time, ms).
const INSTANCES: &str = "bridge:instances";
/// Longest wait for Redis off the request path (heartbeats, returns, late takes).
const BACKGROUND: Duration = Duration::from_secs(1);
/// Late answers in a row after which Redis counts as down.
const LATE_IN_A_ROW: u32 = 3;
/// An instance silent this long is dead: its concurrency slots return to the fleet.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

/// One limit to take from: a token bucket (`capacity` per `period`) or concurrency slots.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its Redis key.
    pub key: String,
    /// Slots rather than a bucket.
    pub slots: bool,
    /// The limit.
    pub capacity: u64,
    /// A bucket's refill period.
    pub period: Duration,
    /// The least that lets the request in.
    pub min: u64,
    /// What to take when there is room: the least plus a chunk for later requests.
    pub want: u64,
}

/// Redis's answer for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Units now held by this instance.
    pub granted: u64,
    /// What the shared limit has left.
    pub left: u64,
    /// When refused: how long until the least would fit.
    pub wait: Duration,
}

/// Redis did not answer in time, or failed: the caller counts alone.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The connection to the fleet's Redis and what is known of it.
pub struct Link {
    url: String,
    timeout: Duration,
    /// This instance's name in the fleet (random, new at each start).
    pub me: String,
    connection: ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    /// Live instances at the last heartbeat (at least 1): the share each enforces when Redis
    /// is down.
    instances: AtomicU64,
    /// Last round trip, in microseconds.
    rtt_us: AtomicU64,
    /// Times Redis was lost (the instance then counted alone).
    pub fallbacks: AtomicU64,
    /// Late answers in a row.
    late: std::sync::atomic::AtomicU32,
    /// Slot returns waiting to be sent, by key.
    returns: Mutex<Vec<(String, u64)>>,
    /// Values to store (`SET NX` with a time to live), waiting to be sent.
    writes: Mutex<Vec<(String, String, Duration)>>,
    /// Wakes the sender of slot returns and writes.
    returned: tokio::sync::Notify,
    take: redis::Script,
    give_back: redis::Script,
    heartbeat: redis::Script,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("me", &self.me)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `url` (not connected yet: [`Link::keep_up`] connects it).
    pub fn new(url: String, timeout: Duration) -> Self {
        Link {
            url,
            timeout,
            me: format!("{:016x}", fastrand::u64(..)),
            connection: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            instances: AtomicU64::new(1),
            rtt_us: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            late: std::sync::atomic::AtomicU32::new(0),
            returns: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
            returned: tokio::sync::Notify::new(),
            take: redis::Script::new(TAKE),
            give_back: redis::Script::new(RETURN),
            heartbeat: redis::Script::new(HEARTBEAT),
        }
    }

    /// Whether the shared counters are in use (else each instance counts alone).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Live instances at the last heartbeat.
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// The last round trip to Redis.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Ordering::Relaxed))
    }

    /// Takes `entries` all or nothing. A failure marks the link down (logged once): the caller
    /// then counts alone until [`Link::keep_up`] finds Redis again. The caller bounds its own
    /// wait ([`Link::timeout`]); this call goes on, so a late grant is still kept.
    pub async fn take(&self, entries: &[Entry]) -> Result<(bool, Vec<Granted>), Unreachable> {
        let mut call = self.take.prepare_invoke();
        call.arg(&self.me).arg(DEAD_AFTER.as_millis() as u64);
        for e in entries {
            call.key(&e.key)
                .arg(if e.slots { "c" } else { "b" })
                .arg(e.capacity)
                .arg(e.period.as_millis() as u64)
                .arg(e.min)
                .arg(e.want);
        }
        call.key(INSTANCES);
        let answer: Vec<u64> = self
            .call(BACKGROUND, |mut c| async move {
                call.invoke_async(&mut c).await
            })
            .await?;
        let granted = answer
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(3)
            .map(|g| Granted {
                granted: g[0],
                left: g[1],
                wait: Duration::from_millis(g[2]),
            })
            .collect::<Vec<_>>();
        if granted.len() != entries.len() {
            return Err(self.lost("Redis answered the limits script with the wrong shape"));
        }
        Ok((answer.first() == Some(&1), granted))
    }

    /// Queues `count` slots of `key` to be given back (sent by [`Link::keep_up`], batched).
    pub fn give_back(&self, key: &str, count: u64) {
        if let Ok(mut returns) = self.returns.lock() {
            match returns.iter_mut().find(|(k, _)| k == key) {
                Some((_, n)) => *n += count,
                None => returns.push((key.to_string(), count)),
            }
        }
        self.returned.notify_one();
    }

    /// Queues `value` to be stored at `key` for `ttl`, unless the key holds a value already
    /// (sent off the request path; dropped while Redis is down).
    pub fn write_once(&self, key: String, value: String, ttl: Duration) {
        if !self.is_up() {
            return;
        }
        if let Ok(mut writes) = self.writes.lock() {
            // Bounded: a burst beyond it while Redis is slow is only kept locally.
            if writes.len() < 10_000 {
                writes.push((key, value, ttl));
            }
        }
        self.returned.notify_one();
    }

    /// The value at `key`, when there is one.
    pub async fn get(&self, key: &str) -> Result<Option<String>, Unreachable> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.call(self.timeout, |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Sets this instance's slots of `key` to `count` (when it resyncs).
    pub async fn set_slots(&self, key: &str, count: u64) -> Result<(), Unreachable> {
        let mut call = self.give_back.prepare_invoke();
        call.key(key).arg(&self.me).arg(count).arg("set");
        self.call(BACKGROUND, |mut c| async move {
            call.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// Runs a Redis call, for at most `limit`; a failure marks the link down.
    async fn call<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, Unreachable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let Some(connection) = self.connection.load_full() else {
            return Err(Unreachable("not connected to Redis".into()));
        };
        let start = Instant::now();
        match tokio::time::timeout(limit, f((*connection).clone())).await {
            Ok(Ok(value)) => {
                // Only an answer in time ends a run of late ones (a late answer still lands).
                if start.elapsed() <= self.timeout {
                    self.late.store(0, Ordering::Relaxed);
                }
                self.rtt_us
                    .store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) => Err(self.lost(&format!("Redis failed: {e}"))),
            Err(_) => Err(self.late()),
        }
    }

    /// The longest wait for Redis on the request path.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An answer came later than [`Link::timeout`]. One is a hiccup; several in a row are a
    /// slow Redis, and the instance stops waiting for it.
    pub fn late(&self) -> Unreachable {
        let why = format!(
            "Redis did not answer within {} ms",
            self.timeout.as_millis()
        );
        if self.late.fetch_add(1, Ordering::Relaxed) + 1 < LATE_IN_A_ROW {
            return Unreachable(why);
        }
        self.lost(&format!("{why}, {LATE_IN_A_ROW} times in a row"))
    }

    fn lost(&self, why: &str) -> Unreachable {
        if self.up.swap(false, Ordering::Relaxed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "{why}: each instance now enforces its share of the limits alone, until Redis is back"
            );
        }
        Unreachable(why.to_string())
    }

    /// Connects, then beats every second: counts the live instances and sends slot returns as
    /// they are queued. When Redis comes back after an outage it calls `resync(true)`, which
    /// registers the slots in use afresh, before the shared counters are used again; while up,
    /// `resync(false)` every ten beats re-registers the slots held (a slot call that was lost
    /// on the way skews the fleet's count for seconds at most). Never completes.
    pub async fn keep_up<F, Fut>(&self, resync: F)
    where
        F: Fn(bool) -> Fut,
        Fut: std::future::Future<Output = Result<(), Unreachable>>,
    {
        let mut logged = false;
        let mut beats = 0u64;
        loop {
            beats += 1;
            if self.connection.load().is_none() {
                match self.connect().await {
                    Ok(c) => self.connection.store(Some(std::sync::Arc::new(c))),
                    Err(e) if !logged => {
                        logged = true;
                        tracing::warn!("cannot reach Redis for the fleet's limits ({e}): each instance enforces its share alone until it can");
                    }
                    Err(_) => {}
                }
            }
            let beat = self.beat().await;
            if beat.is_err() {
                // A fresh connection next time, rather than a client stuck reconnecting.
                self.connection.store(None);
            }
            if beat.is_ok() && !self.is_up() {
                // Returns queued while down are stale: the resync sets every count afresh.
                if let Ok(mut returns) = self.returns.lock() {
                    returns.clear();
                }
            }
            if beat.is_ok() && self.is_up() && beats % 10 == 0 {
                let _ = resync(false).await;
            }
            if beat.is_ok() && !self.is_up() && resync(true).await.is_ok() {
                logged = false;
                self.up.store(true, Ordering::Relaxed);
                tracing::info!(
                    instances = self.instances(),
                    "the fleet's limits are shared through Redis"
                );
            }
            let next_beat = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(next_beat);
            loop {
                if self.is_up() {
                    self.send_returns().await;
                }
                tokio::select! {
                    () = &mut next_beat => break,
                    () = self.returned.notified() => {}
                }
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        ConnectionManager::new_with_config(client, config).await
    }

    async fn beat(&self) -> Result<(), Unreachable> {
        let mut call = self.heartbeat.prepare_invoke();
        call.key(INSTANCES)
            .arg(&self.me)
            .arg(DEAD_AFTER.as_millis() as u64);
        let live: u64 = self
            .call(BACKGROUND, |mut c| async move {
                call.invoke_async(&mut c).await
            })
            .await?;
        self.instances.store(live.max(1), Ordering::Relaxed);
        Ok(())
    }

    async fn send_returns(&self) {
        let writes = match self.writes.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Vec::new(),
        };
        if !writes.is_empty() {
            let mut pipe = redis::pipe();
            for (key, value, ttl) in &writes {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .ignore();
            }
            let sent = self
                .call(BACKGROUND, |mut c| async move {
                    pipe.query_async::<()>(&mut c).await
                })
                .await;
            if sent.is_err() {
                return;
            }
        }
        let returns = match self.returns.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        for (key, count) in returns {
            let mut call = self.give_back.prepare_invoke();
            call.key(&key).arg(&self.me).arg(count).arg("add");
            let sent = self
                .call(BACKGROUND, |mut c| async move {
                    call.invoke_async::<i64>(&mut c).await
                })
                .await;
            if sent.is_err() {
                // Down now: the resync sets every count afresh.
                return;
            }
        }
    }
}

//! The link to the fleet's Redis: one script call that takes from every shared limit a request
//! needs at once, slot returns and heartbeats sent off the request path, and the state of the
//! link (up, or down and counting alone), which nothing on the request path ever waits for
//! longer than the configured timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Prefix of every key Bridge writes.
pub const PREFIX: &str = "bridge:";
/// The sorted set of instances by their last heartbeat (Redis time, ms).
const INSTANCES: &str = "bridge:instances";
/// An instance silent this long is dead: its concurrency slots return to the fleet.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Takes from several shared limits at once, all or nothing. Per entry, `ARGV` holds the kind
/// (`b`: a token bucket; `c`: concurrency slots, one hash field per instance), the limit, the
/// bucket's period (ms), and the least and most to take. Returns `ok`, then per entry what was
/// granted, what is left, and how long until the least would fit (ms). Redis's own clock is the
/// fleet's, so instances' clocks never matter.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, dead = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 1
local levels, ok = {}, 1
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local kind, cap, period, min = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local level
  if kind == 'b' then
    local h = redis.call('HMGET', KEYS[i], 'l', 't')
    local l, at = tonumber(h[1]), tonumber(h[2])
    if l == nil or at == nil then level = cap
    else level = math.min(cap, l + math.max(0, now - at) * cap / period) end
  else
    local used, f = 0, redis.call('HGETALL', KEYS[i])
    for j = 1, #f, 2 do
      local beat = redis.call('ZSCORE', KEYS[#KEYS], f[j])
      if f[j] == me or (beat and now - tonumber(beat) < dead) then
        used = used + tonumber(f[j + 1])
      else
        redis.call('HDEL', KEYS[i], f[j])
      end
    end
    level = cap - used
  end
  levels[i] = level
  if level < min then ok = 0 end
end
local out = {ok}
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local kind, cap, period = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local min, want = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local level, grant, wait = levels[i], 0, 0
  if ok == 1 then grant = math.min(want, math.floor(level)) end
  level = level - grant
  if kind == 'b' then
    redis.call('HSET', KEYS[i], 'l', tostring(level), 't', now)
    redis.call('PEXPIRE', KEYS[i], period + 1000)
    if level < min and grant == 0 then wait = math.ceil((min - level) * period / cap) end
  else
    if grant > 0 then redis.call('HINCRBY', KEYS[i], me, grant) end
    if level < min and grant == 0 then wait = 1000 end
  end
  out[#out + 1] = grant
  out[#out + 1] = math.max(0, math.floor(level))
  out[#out + 1] = wait
end
return out
";

/// Gives back `ARGV[2]` slots of instance `ARGV[1]` (or sets them, with `ARGV[3] = 'set'`).
const RETURN: &str = r"
local v
if ARGV[3] == 'set' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); v = tonumber(ARGV[2])
else
  v = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
end
if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
";

/// Records this instance as alive and counts the live ones.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 100 * dead)
return redis.call('ZCOUNT', KEYS[1], now - dead, '+inf')
";

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

    /// Takes `entries` all or nothing. A failure or a late answer marks the link down (logged
    /// once): the caller then counts alone until [`Link::keep_up`] finds Redis again.
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
            .call(|mut c| async move { call.invoke_async(&mut c).await })
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
        self.call(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Sets this instance's slots of `key` to `count` (when it rejoins).
    pub async fn set_slots(&self, key: &str, count: u64) -> Result<(), Unreachable> {
        let mut call = self.give_back.prepare_invoke();
        call.key(key).arg(&self.me).arg(count).arg("set");
        self.call(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
            .await
            .map(drop)
    }

    /// Runs a Redis call with the timeout; a failure marks the link down.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Unreachable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let Some(connection) = self.connection.load_full() else {
            return Err(Unreachable("not connected to Redis".into()));
        };
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, f((*connection).clone())).await {
            Ok(Ok(value)) => {
                self.rtt_us
                    .store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) => Err(self.lost(&format!("Redis failed: {e}"))),
            Err(_) => Err(self.lost(&format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
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

    /// Connects, then beats every second: counts the live instances, sends slot returns as
    /// they are queued, and when Redis comes back after an outage, calls `rejoin` (which re-registers
    /// the slots in use) before the shared counters are used again. Never completes.
    pub async fn keep_up<F, Fut>(&self, rejoin: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), Unreachable>>,
    {
        let mut logged = false;
        loop {
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
            if self.beat().await.is_ok() && !self.is_up() && rejoin().await.is_ok() {
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
            .call(|mut c| async move { call.invoke_async(&mut c).await })
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
                .call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
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
                .call(|mut c| async move { call.invoke_async::<i64>(&mut c).await })
                .await;
            if sent.is_err() {
                // Down now: the rejoin sets every count afresh.
                return;
            }
        }
    }
}

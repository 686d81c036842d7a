//! The Lua scripts Bridge runs in Redis. Each runs atomically there, so a limit is checked and
//! taken in one step whatever the other instances do, and Redis's own clock (`TIME`) is the
//! fleet's: the instances' clocks never matter.

/// Takes from several shared limits at once, all or nothing. Per entry, `ARGV` holds the kind
/// (`b`: a token bucket; `c`: concurrency slots, one hash field per instance), the limit, the
/// bucket's period (ms), and the least and most to take. Returns `ok`, then per entry what was
/// granted, what is left, and how long until the least would fit (ms). Redis's own clock is the
/// fleet's, so instances' clocks never matter.
pub(super) const TAKE: &str = r"
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
pub(super) const RETURN: &str = r"
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
pub(super) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 100 * dead)
return redis.call('ZCOUNT', KEYS[1], now - dead, '+inf')
";

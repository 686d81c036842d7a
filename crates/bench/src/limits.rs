//! What limits cost: Bridge with none, with limits counted per instance, and with limits shared
//! through Redis, interleaved in one run (c=1 latency, c=64 throughput), and how many Redis
//! round trips the shared arm made per request (the leases' work).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::load::{self, closed_loop, Limit, Target};
use crate::procs::{self, redis_command, Result, Server};

/// Every limit a model can have, high enough never to refuse here (the cost of counting, not of
/// refusing) yet within reach of the load, so leases run out and are refilled: 1% of `rpm` is
/// 60,000 requests per Redis call, of `max_concurrent` 10 slots.
const LIMITS: &str = "rpm = 6000000\ntpm = 6000000000\ntpd = 1000000000000\nmax_concurrent = 1000";

/// One arm of the limits figure.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsPoint {
    pub arm: String,
    pub c1_p50_us: f64,
    pub c1_p99_us: f64,
    pub c64_rps: f64,
    pub c64_p99_us: f64,
    /// Redis script calls per 1,000 requests (the shared arm only).
    pub redis_calls_per_1000: Option<f64>,
}

/// Runs the figure: `off` is the Bridge without limits; the other two arms are started here.
pub async fn figure(
    engine: &Server,
    off: &Target,
    dir: &Path,
    body: Bytes,
    rounds: usize,
    per_round: u64,
    sweep_time: Duration,
) -> Result<Vec<LimitsPoint>> {
    let redis = procs::start_redis().await?;
    let local = procs::start_bridge_with(engine, dir, "bridge-limits-local", LIMITS).await?;
    let shared_config = format!("{LIMITS}\n[limits]\nredis = \"redis://{}/0\"\n", redis.addr);
    // `[limits]` must follow the model's keys: it starts a table of its own.
    let shared =
        procs::start_bridge_with(engine, dir, "bridge-limits-redis", &shared_config).await?;
    // The shared arm joins Redis within a second of starting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target = |arm: &'static str, server: &Server| Target {
        arm,
        addr: server.addr.clone(),
        path: off.path.clone(),
        headers: &[],
    };
    let targets = [
        off.clone(),
        target("bridge-limits-local", &local),
        target("bridge-limits-redis", &shared),
    ];
    for t in &targets[1..] {
        closed_loop(t, body.clone(), 8, Limit::Requests(2000)).await?;
    }
    let calls_before = script_calls(&redis.addr).await?;
    let mut shared_requests = 0;
    let mut c1: Vec<_> = targets.iter().map(|_| load::histogram()).collect();
    let mut c64: Vec<(f64, f64)> = vec![(0.0, 0.0); targets.len()];
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let run = closed_loop(t, body.clone(), 1, Limit::Requests(per_round)).await?;
            let _ = c1[i].add(&run.latency);
            if i == 2 {
                shared_requests += run.completed;
            }
        }
    }
    for _ in 0..2 {
        for (i, t) in targets.iter().enumerate() {
            let run = closed_loop(t, body.clone(), 64, Limit::Time(sweep_time)).await?;
            c64[i].0 += run.rps() / 2.0;
            c64[i].1 = c64[i].1.max(run.micros(0.99));
            if i == 2 {
                shared_requests += run.completed;
            }
        }
    }
    let calls = script_calls(&redis.addr).await? - calls_before;
    let points = targets
        .iter()
        .zip(c1.iter().zip(&c64))
        .enumerate()
        .map(|(i, (t, (h, (rps, p99))))| LimitsPoint {
            arm: t.arm.to_string(),
            c1_p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
            c1_p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            c64_rps: *rps,
            c64_p99_us: *p99,
            redis_calls_per_1000: (i == 2)
                .then(|| calls as f64 * 1000.0 / shared_requests.max(1) as f64),
        })
        .collect();
    drop((local, shared, redis));
    Ok(points)
}

/// Script calls (`EVALSHA`, `EVAL`) Redis has run so far: the limits' round trips.
async fn script_calls(addr: &str) -> Result<u64> {
    let info = redis_command(addr, &["INFO", "commandstats"]).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

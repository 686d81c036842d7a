//! Request body sizes: what each arm adds at concurrency 1 to a 1 KB, 100 KB and 1 MiB prompt,
//! and, as one more arm, an nginx that reads the whole body before forwarding it.
//!
//! Why that arm: Bridge routes by a field of the body (`baseten`, which may come last), so it
//! cannot send a byte to an engine before the body is whole; the nginx arm streams the body
//! through. nginx reading the body first is the same store-and-forward, so the two nginx arms
//! together tell what body routing costs from what Bridge adds on top.

use std::path::Path;

use crate::load::{self, chat_body, closed_loop, Limit, Target};
use crate::procs::{self, Result, Server};
use crate::report::BodyPoint;

/// The added latency of each arm, and of a buffering nginx, per body size.
pub async fn run(
    targets: &[Target],
    engine: &Server,
    dir: &Path,
    requests: u64,
) -> Result<Vec<BodyPoint>> {
    let buffered = procs::start_nginx_buffered(engine, dir).await?;
    let mut arms = targets.to_vec();
    if let Some(nginx) = targets.iter().find(|t| t.arm == "nginx") {
        arms.push(Target {
            arm: "nginx-buffered",
            addr: buffered.addr.clone(),
            ..nginx.clone()
        });
    }
    let mut points = Vec::new();
    for size in [1 << 10, 100 << 10, 1 << 20] {
        let body = chat_body(size, "");
        let mut per_arm: Vec<_> = arms.iter().map(|_| load::histogram()).collect();
        for _ in 0..5 {
            for (i, t) in arms.iter().enumerate() {
                let run = closed_loop(t, body.clone(), 1, Limit::Requests(requests / 5)).await?;
                let _ = per_arm[i].add(&run.latency);
            }
        }
        for (t, h) in arms.iter().zip(&per_arm) {
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            points.push(BodyPoint {
                arm: t.arm.into(),
                bytes: size,
                p50_us: us(0.5),
                p99_us: us(0.99),
            });
        }
    }
    Ok(points)
}

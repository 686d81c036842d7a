//! The soak: does memory come back? Rounds of the same burst (paced streams, then JSON
//! requests at concurrency 64) against Bridge alone, with its RSS read before the first round,
//! right after each round's load, and ten seconds later. A process that keeps its peak, or
//! creeps a little after each burst, shows it here.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::load::{chat_body, closed_loop, Limit, Target};
use crate::procs::{rss_kib, Result};
use crate::stream::{paced, StreamSpec};

/// How long after a round its memory is read again.
const SETTLE: Duration = Duration::from_secs(10);

/// One round: RSS right after the load, and after [`SETTLE`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakRound {
    pub round: usize,
    pub after_load_kib: u64,
    pub settled_kib: u64,
    pub failed: usize,
}

/// The whole soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Soak {
    pub idle_kib: u64,
    pub streams: usize,
    pub requests: u64,
    pub rounds: Vec<SoakRound>,
}

/// `rounds` rounds of `streams` paced streams then `requests` JSON requests, against `target`
/// (Bridge, process `pid`).
pub async fn figure(
    target: &Target,
    pid: u32,
    rounds: usize,
    streams: usize,
    requests: u64,
) -> Result<Soak> {
    let spec = StreamSpec {
        streams,
        chunks: 16,
        gap: Duration::from_millis(100),
        ramp: Duration::from_secs(1),
    };
    let mut soak = Soak {
        idle_kib: rss_kib(pid),
        streams,
        requests,
        rounds: Vec::new(),
    };
    for round in 1..=rounds {
        let run = paced(target, spec, Arc::new(AtomicUsize::new(0))).await?;
        let json = closed_loop(target, chat_body(256, ""), 64, Limit::Requests(requests)).await?;
        let after_load_kib = rss_kib(pid);
        tokio::time::sleep(SETTLE).await;
        let settled_kib = rss_kib(pid);
        eprintln!(
            "  round {round}: {after_load_kib} KiB after the load, {settled_kib} KiB {} s later",
            SETTLE.as_secs()
        );
        soak.rounds.push(SoakRound {
            round,
            after_load_kib,
            settled_kib,
            failed: run.failed + json.errors as usize,
        });
    }
    Ok(soak)
}

impl Soak {
    /// The soak as a Markdown table.
    pub fn table(&self) -> String {
        let mb = |kib: u64| kib as f64 / 1024.0;
        let mut out = format!(
            "Soak: {} paced streams then {} JSON requests (c=64) per round; idle RSS {:.1} MB\n\n\
             | round | RSS after the load | 10 s later | failed |\n|---|---|---|---|\n",
            self.streams,
            self.requests,
            mb(self.idle_kib)
        );
        for r in &self.rounds {
            out += &format!(
                "| {} | {:.1} MB | {:.1} MB | {} |\n",
                r.round,
                mb(r.after_load_kib),
                mb(r.settled_kib),
                r.failed
            );
        }
        out
    }
}

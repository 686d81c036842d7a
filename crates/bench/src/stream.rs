//! Paced streaming load: many concurrent SSE streams, each event timestamped on arrival.
//!
//! Streams are opened at an even rate over a ramp (so no arm is judged on its listen backlog),
//! each on its own connection, asking the engine for `chunks` events `gap` apart. Per stream it
//! measures time to first byte, events received (lost = expected − received), and stalls: gaps
//! between consecutive events longer than twice the engine's gap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::body::Body;

use crate::load::{chat_body, connect, histogram, request, Target};
use crate::procs::Result;

#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub streams: usize,
    pub chunks: usize,
    pub gap: Duration,
    /// Time over which the streams are opened.
    pub ramp: Duration,
}

impl StreamSpec {
    /// Events a complete stream carries: the content chunks, the final chunk and `[DONE]`.
    pub fn expected_events(&self) -> u64 {
        self.chunks as u64 + 2
    }
}

pub struct StreamRun {
    /// Time to first byte of the body, nanoseconds.
    pub ttfb: Histogram<u64>,
    pub completed: usize,
    pub failed: usize,
    pub lost_events: u64,
    pub stalls: u64,
    pub elapsed: Duration,
}

struct One {
    ttfb: Option<u64>,
    events: u64,
    stalls: u64,
    ok: bool,
}

/// Runs `spec` against `target`. `open` counts streams currently open (for RSS sampling).
pub async fn paced(target: &Target, spec: StreamSpec, open: Arc<AtomicUsize>) -> Result<StreamRun> {
    let extra = format!(
        r#","stream":true,"simulate":{{"chunks":{},"gap_ms":{}}}"#,
        spec.chunks,
        spec.gap.as_millis()
    );
    let body = chat_body(256, &extra);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(spec.streams);
    for i in 0..spec.streams {
        let at = started + spec.ramp.mul_f64(i as f64 / spec.streams as f64);
        let (target, body, open) = (target.clone(), body.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            one_stream(&target, body, spec.gap, &open).await
        }));
    }
    let mut run = StreamRun {
        ttfb: histogram(),
        completed: 0,
        failed: 0,
        lost_events: 0,
        stalls: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let one = task.await.map_err(|e| e.to_string())?;
        if let Some(t) = one.ttfb {
            let _ = run.ttfb.record(t);
        }
        run.stalls += one.stalls;
        run.lost_events += spec.expected_events().saturating_sub(one.events);
        if one.ok && one.events == spec.expected_events() {
            run.completed += 1;
        } else {
            run.failed += 1;
        }
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

async fn one_stream(target: &Target, body: bytes::Bytes, gap: Duration, open: &AtomicUsize) -> One {
    let mut one = One {
        ttfb: None,
        events: 0,
        stalls: 0,
        ok: false,
    };
    let Ok(mut sender) = connect(&target.addr).await else {
        return one;
    };
    let sent = Instant::now();
    let Ok(response) = sender.send_request(request(target, &body)).await else {
        return one;
    };
    if !response.status().is_success() {
        return one;
    }
    open.fetch_add(1, Ordering::Relaxed);
    let mut body = response.into_body();
    let mut last_event = sent;
    let mut prev_newline = false;
    let stall = gap * 2;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(Ok(frame)) = frame else {
            one.ok = frame.is_none();
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        if one.ttfb.is_none() {
            one.ttfb = Some((now - sent).as_nanos() as u64);
        }
        // Count event terminators ("\n\n"), including one split across frames.
        for &b in data.iter() {
            if b == b'\n' && prev_newline {
                one.events += 1;
                if one.events > 1 && now - last_event > stall {
                    one.stalls += 1;
                }
                last_event = now;
                prev_newline = false;
            } else {
                prev_newline = b == b'\n';
            }
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
    one
}

//! Results: raw data (JSON, CSV), the ratio table printed for BENCHMARKS.md, and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::chart::chart;
use crate::procs::Result;

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub command: String,
    pub machine: String,
    pub mode: String,
    /// Per arm, closed loop at concurrency 1, small body.
    pub latency_c1: Vec<Latency>,
    pub sweep: Vec<SweepPoint>,
    pub bodies: Vec<BodyPoint>,
    pub streams: Vec<StreamPoint>,
    pub memory: Memory,
    /// Bridge's RSS (KiB) against its open streams, sampled during the scale run.
    pub rss_curve: Vec<(usize, u64)>,
    pub cpu: Vec<Cpu>,
    /// The same, with the official Python SDK's headers.
    pub cpu_sdk: Vec<Cpu>,
    /// Bridge without limits, with limits per instance, with limits shared through Redis.
    pub limits: Vec<crate::limits::LimitsPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub arm: String,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub arm: String,
    pub concurrency: usize,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BodyPoint {
    pub arm: String,
    pub bytes: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamPoint {
    pub arm: String,
    pub shape: String,
    pub streams: usize,
    pub completed: usize,
    pub failed: usize,
    pub lost_events: u64,
    pub stalls: u64,
    pub ttfb_p50_us: f64,
    pub ttfb_p99_us: f64,
    /// The proxy's CPU time over the run (none for the direct arm).
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Memory {
    pub idle_kib: u64,
    pub peak_kib: u64,
    pub streams_at_peak: usize,
    pub per_stream_kib: f64,
    pub after_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub arm: String,
    pub rps: f64,
    pub requests: u64,
    pub cpu_seconds: f64,
    pub cpu_ms_per_1000: f64,
}

impl Cpu {
    /// What `arm`'s proxy spent, `cpu_seconds` of CPU, on `run`.
    pub fn of(arm: &str, run: &crate::load::Run, cpu_seconds: f64) -> Self {
        Cpu {
            arm: arm.into(),
            rps: run.rps(),
            requests: run.completed,
            cpu_seconds,
            cpu_ms_per_1000: cpu_seconds * 1000.0 / (run.completed.max(1) as f64 / 1000.0),
        }
    }
}

fn find<T>(items: &[T], pred: impl Fn(&T) -> bool) -> Option<&T> {
    items.iter().find(|i| pred(i))
}

impl Results {
    /// The markdown table of figures and ratios, as pasted into BENCHMARKS.md.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let direct = find(&self.latency_c1, |l| l.arm == "direct");
        let _ = writeln!(
            out,
            "### Added latency at concurrency 1 (closed loop, small chat body)\n"
        );
        let _ = writeln!(out, "| arm | requests | p50 µs | p99 µs | added p50 µs | added p99 µs |\n|---|---|---|---|---|---|");
        for l in &self.latency_c1 {
            let (a50, a99) =
                direct.map_or((0.0, 0.0), |d| (l.p50_us - d.p50_us, l.p99_us - d.p99_us));
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:+.1} | {:+.1} |",
                l.arm, l.requests, l.p50_us, l.p99_us, a50, a99
            );
        }
        let _ = writeln!(
            out,
            "\n### Throughput sweep (closed loop; best = highest req/s with p99 < 1 s)\n"
        );
        let _ = writeln!(
            out,
            "| arm | concurrency | req/s | p50 µs | p99 µs | errors |\n|---|---|---|---|---|---|"
        );
        for p in &self.sweep {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                p.arm, p.concurrency, p.rps, p.p50_us, p.p99_us, p.errors
            );
        }
        let best = |arm: &str| {
            self.sweep
                .iter()
                .filter(|p| p.arm == arm && p.p99_us < 1_000_000.0)
                .map(|p| p.rps)
                .fold(0.0, f64::max)
        };
        let (b, n, d) = (best("bridge"), best("nginx"), best("direct"));
        let _ = writeln!(out, "\nBest req/s: direct {d:.0}, bridge {b:.0}, nginx {n:.0}; bridge/nginx {:.2}, bridge/direct {:.2}", ratio(b, n), ratio(b, d));
        let _ = writeln!(out, "\n### Request body size (concurrency 1)\n");
        let _ = writeln!(out, "| bytes | arm | p50 µs | p99 µs | added p50 µs | added p99 µs |\n|---|---|---|---|---|---|");
        for p in &self.bodies {
            let base = find(&self.bodies, |q| q.arm == "direct" && q.bytes == p.bytes);
            let (a50, a99) =
                base.map_or((0.0, 0.0), |d| (p.p50_us - d.p50_us, p.p99_us - d.p99_us));
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:+.0} | {:+.0} |",
                p.bytes, p.arm, p.p50_us, p.p99_us, a50, a99
            );
        }
        let _ = writeln!(out, "\n### Paced streams\n");
        let _ = writeln!(out, "| shape | arm | completed | failed | lost events | stalls | TTFB p50 µs | TTFB p99 µs | added TTFB p99 µs | proxy CPU s |\n|---|---|---|---|---|---|---|---|---|---|");
        for s in &self.streams {
            let base = find(&self.streams, |q| q.arm == "direct" && q.shape == s.shape);
            let added = base.map_or(0.0, |d| s.ttfb_p99_us - d.ttfb_p99_us);
            let _ = writeln!(
                out,
                "| {} | {} | {}/{} | {} | {} | {} | {:.0} | {:.0} | {:+.0} | {} |",
                s.shape,
                s.arm,
                s.completed,
                s.streams,
                s.failed,
                s.lost_events,
                s.stalls,
                s.ttfb_p50_us,
                s.ttfb_p99_us,
                added,
                s.cpu_seconds.map_or("–".into(), |c| format!("{c:.2}"))
            );
        }
        let m = &self.memory;
        let _ = writeln!(out, "\n### Bridge memory and CPU\n");
        let _ = writeln!(
            out,
            "RSS idle {:.1} MB; at {} open streams {:.1} MB ({:.1} KB per stream); after the load {:.1} MB ({:+.0}% of idle).",
            m.idle_kib as f64 / 1024.0,
            m.streams_at_peak,
            m.peak_kib as f64 / 1024.0,
            m.per_stream_kib,
            m.after_kib as f64 / 1024.0,
            100.0 * (m.after_kib as f64 - m.idle_kib as f64) / m.idle_kib.max(1) as f64
        );
        cpu_table(&mut out, &self.cpu);
        if !self.cpu_sdk.is_empty() {
            let _ = writeln!(
                out,
                "\n### With the official Python SDK's headers (c=32, small chat body)\n"
            );
            cpu_table(&mut out, &self.cpu_sdk);
        }
        self.limits_table(&mut out);
        out
    }

    /// Writes results.json, sweep.csv, rss.csv, the plots and table.md into `dir`.
    fn limits_table(&self, out: &mut String) {
        let Some(off) = self.limits.first() else {
            return;
        };
        let _ = writeln!(
            out,
            "\n### What limits cost (every limit of a model set, never refusing)\n"
        );
        let _ = writeln!(out, "| arm | c=1 p50 µs | c=1 p99 µs | vs none p50 µs | c=64 req/s | × none | Redis calls per 1,000 requests |\n|---|---|---|---|---|---|---|");
        for p in &self.limits {
            let calls = p
                .redis_calls_per_1000
                .map_or_else(|| "–".to_string(), |c| format!("{c:.1}"));
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:+.1} | {:.0} | {:.2} | {calls} |",
                p.arm,
                p.c1_p50_us,
                p.c1_p99_us,
                p.c1_p50_us - off.c1_p50_us,
                p.c64_rps,
                p.c64_rps / off.c64_rps.max(1.0)
            );
        }
        let _ = writeln!(out);
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "results.json",
            serde_json::to_string_pretty(self).map_err(|e| e.to_string())?,
        )?;
        let mut csv = String::from("arm,concurrency,rps,p50_us,p99_us,errors\n");
        for p in &self.sweep {
            let _ = writeln!(
                csv,
                "{},{},{:.1},{:.1},{:.1},{}",
                p.arm, p.concurrency, p.rps, p.p50_us, p.p99_us, p.errors
            );
        }
        write("sweep.csv", csv)?;
        let mut csv = String::from("open_streams,rss_kib\n");
        for (open, rss) in &self.rss_curve {
            let _ = writeln!(csv, "{open},{rss}");
        }
        write("rss.csv", csv)?;
        write("table.md", self.table())?;
        let series = |f: &dyn Fn(&SweepPoint) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            ["direct", "bridge", "nginx"]
                .iter()
                .map(|arm| {
                    let points = self
                        .sweep
                        .iter()
                        .filter(|p| p.arm == *arm)
                        .map(|p| (p.concurrency as f64, f(p)))
                        .collect();
                    (arm.to_string(), points)
                })
                .filter(|(_, p): &(String, Vec<(f64, f64)>)| !p.is_empty())
                .collect()
        };
        write(
            "latency-vs-concurrency.svg",
            chart(
                "p99 latency vs concurrency",
                "concurrency (log)",
                "p99 ms",
                &series(&|p| p.p99_us / 1000.0),
                true,
            ),
        )?;
        write(
            "throughput-vs-concurrency.svg",
            chart(
                "throughput vs concurrency",
                "concurrency (log)",
                "requests/s",
                &series(&|p| p.rps),
                true,
            ),
        )?;
        let rss = vec![(
            "bridge".to_string(),
            self.rss_curve
                .iter()
                .map(|(o, r)| (*o as f64, *r as f64 / 1024.0))
                .collect(),
        )];
        write(
            "rss-vs-streams.svg",
            chart(
                "Bridge RSS vs open streams",
                "open streams",
                "RSS MB",
                &rss,
                false,
            ),
        )?;
        Ok(())
    }
}

/// Per arm: throughput and the proxy's CPU; Bridge's CPU per request against nginx's.
fn cpu_table(out: &mut String, cpu: &[Cpu]) {
    let _ = writeln!(
        out,
        "\n| arm | requests | req/s | CPU s | CPU ms per 1,000 requests |\n|---|---|---|---|---|"
    );
    for c in cpu {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.1} |",
            c.arm, c.requests, c.rps, c.cpu_seconds, c.cpu_ms_per_1000
        );
    }
    if let (Some(b), Some(n)) = (
        find(cpu, |c| c.arm == "bridge"),
        find(cpu, |c| c.arm == "nginx"),
    ) {
        let _ = writeln!(
            out,
            "\nBridge CPU per request / nginx's: {:.2}",
            ratio(b.cpu_ms_per_1000, n.cpu_ms_per_1000)
        );
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

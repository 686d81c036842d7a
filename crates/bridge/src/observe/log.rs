//! Where log lines go: a buffer in memory that one background thread writes to stderr.
//!
//! Writing each line to stderr as it is made cost a `write` system call per request (the
//! request log), on the thread serving requests, and a stalled reader of stderr (a full pipe)
//! would stall requests. Here the serving threads only append to a buffer; the writer thread
//! takes everything pending at once, every few milliseconds, so a busy Bridge writes many lines
//! per call and an idle one wakes the writer only when a line arrives. Lines keep the order in
//! which they were appended.
//!
//! The buffer is bounded ([`MAX_PENDING`]): when stderr does not keep up, lines beyond it are
//! dropped, counted (`bridge_log_lines_dropped_total`), and a line saying how many is written
//! once the writer catches up. Requests never wait for the log.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log waiting for the writer beyond which lines are dropped (about 16,000 request
/// lines: seconds of a busy Bridge's log).
pub const MAX_PENDING: usize = 4 << 20;

/// How long the writer gathers lines after a write before the next one.
const GATHER: Duration = Duration::from_millis(5);

/// The process's log sink, once [`start`] ran.
static SINK: OnceLock<Sink> = OnceLock::new();

struct Sink {
    pending: Mutex<Pending>,
    /// Signalled when a line arrives for a writer waiting on an empty buffer.
    arrived: Condvar,
    /// Held while bytes go to stderr, so that [`flush`] and the writer never reorder lines.
    writing: Mutex<()>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The writer waits for a line (the next append must wake it).
    waiting: bool,
}

/// Starts the writer thread (once; later calls change nothing) and returns the writer to give
/// `tracing_subscriber`'s formatter, so every log line goes through the same buffer.
pub fn start() -> SinkWriter {
    let mut started = false;
    SINK.get_or_init(|| {
        started = true;
        Sink::new()
    });
    if started {
        let spawned = std::thread::Builder::new()
            .name("bridge-log".into())
            .spawn(write_forever);
        if let Err(e) = spawned {
            // Lines still reach stderr through `flush` at exit; say why they are late.
            eprintln!("bridge: cannot start the log writer thread ({e}); logs are written at exit");
        }
    }
    SinkWriter
}

/// Whether [`start`] ran (the request log formats its own lines only then).
pub fn started() -> bool {
    SINK.get().is_some()
}

/// Appends one or more whole lines. Without a sink (a library user that did not call
/// [`start`]) they go straight to stderr.
pub fn append(line: &[u8]) {
    match SINK.get() {
        Some(sink) => sink.append(line),
        None => {
            let _ = std::io::stderr().write_all(line);
        }
    }
}

/// Writes out everything pending, now (at exit: the writer thread does not outlive `main`).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.write_pending(&mut Vec::new(), &mut std::io::stderr().lock());
    }
}

/// Lines dropped because stderr did not keep up, since the start.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

fn write_forever() {
    let Some(sink) = SINK.get() else { return };
    let mut spare = Vec::new();
    let mut reported = 0;
    while sink.wait_for_lines() {
        sink.write_pending(&mut spare, &mut std::io::stderr().lock());
        let dropped = sink.dropped.load(Ordering::Relaxed);
        if dropped != reported {
            sink.append(
                format!(
                    "bridge: {} log lines dropped: stderr did not keep up (bridge_log_lines_dropped_total)\n",
                    dropped - reported
                )
                .as_bytes(),
            );
            reported = dropped;
        }
        std::thread::sleep(GATHER);
    }
}

impl Sink {
    fn new() -> Self {
        Sink {
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            writing: Mutex::new(()),
            dropped: AtomicU64::new(0),
        }
    }

    fn append(&self, line: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.bytes.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        if pending.waiting {
            pending.waiting = false;
            drop(pending);
            self.arrived.notify_one();
        }
    }

    /// Blocks until something is pending; `false` if the sink is unusable (a poisoned lock).
    fn wait_for_lines(&self) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        while pending.bytes.is_empty() {
            pending.waiting = true;
            pending = match self.arrived.wait(pending) {
                Ok(p) => p,
                Err(_) => return false,
            };
        }
        true
    }

    /// Takes what is pending (leaving `spare`'s allocation in its place) and writes it to `out`.
    fn write_pending(&self, spare: &mut Vec<u8>, out: &mut impl Write) {
        let Ok(_writing) = self.writing.lock() else {
            return;
        };
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        spare.clear();
        std::mem::swap(&mut pending.bytes, spare);
        drop(pending);
        if !spare.is_empty() {
            // Nowhere to report a failing stderr; the lines are gone either way.
            let _ = out.write_all(spare);
        }
        // A burst's buffer is not kept for the quiet that follows it.
        if spare.capacity() > 256 << 10 {
            *spare = Vec::new();
        }
    }
}

/// The writer `tracing_subscriber` formats into; each event becomes one [`append`].
#[derive(Clone, Copy, Debug)]
pub struct SinkWriter;

/// One event's bytes on their way to the sink.
#[derive(Debug)]
pub struct SinkLine;

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = SinkLine;
    fn make_writer(&'a self) -> SinkLine {
        SinkLine
    }
}

impl Write for SinkLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        append(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_in_order_and_beyond_the_bound_are_counted() {
        let sink = Sink::new();
        let line = vec![b'x'; 1023];
        let fit = MAX_PENDING / 1024;
        for i in 0..fit + 10 {
            let mut numbered = format!("{i:08}").into_bytes();
            numbered.extend_from_slice(&line[8..]);
            numbered.push(b'\n');
            sink.append(&numbered);
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 10);
        let mut out = Vec::new();
        sink.write_pending(&mut Vec::new(), &mut out);
        assert_eq!(out.len(), fit * 1024);
        for (i, l) in out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            assert_eq!(&l[..8], format!("{i:08}").as_bytes());
        }
        // Written out, there is room again.
        sink.append(b"after\n");
        let mut out = Vec::new();
        sink.write_pending(&mut Vec::new(), &mut out);
        assert_eq!(out, b"after\n");
    }

    #[test]
    fn a_waiting_writer_is_woken_by_a_line() {
        let sink = std::sync::Arc::new(Sink::new());
        let (woke, woken) = std::sync::mpsc::channel();
        {
            let sink = sink.clone();
            std::thread::spawn(move || woke.send(sink.wait_for_lines()));
        }
        // The writer is asleep on the condition variable before the line comes, so only the
        // append's notification can wake it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !sink.pending.lock().unwrap().waiting {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(woken.try_recv().is_err(), "woke with nothing to write");
        sink.append(b"one\n");
        assert_eq!(woken.recv_timeout(Duration::from_secs(5)), Ok(true));
    }
}

//! SSE scanner (`bridge::sse::SseScanner`, inherent `feed` / `finish`), with and without usage
//! stripping. Asserts:
//!
//! 1. Nothing panics, and `feed` never reports `EventTooLarge` (inputs are far below
//!    `MAX_EVENT_BYTES`).
//! 2. Split invariance: when the input fed in one piece is accepted, it is accepted however it
//!    is cut, and what reaches the client (all output chunks concatenated, `finish` included)
//!    and the `done` / `errored` flags are identical.
//! 3. What `feed` relays is always valid UTF-8 (a stream stops at the first `InvalidUtf8`, as
//!    the relay does). Since `ScanError::InvalidUtf8` exists so that clients never receive
//!    non-UTF-8 bytes, what `finish` relays is checked too, unless
//!    `BRIDGE_FUZZ_SSE_LENIENT_FINISH` is set (see fuzz/README.md: that skips the finding in
//!    regressions/sse/finish-invalid-utf8, fixed in 776daf8).
#![no_main]

mod common;

use std::collections::VecDeque;
use std::sync::OnceLock;

use bridge::dialect::openai::stream::{ScanError, SseScanner};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

struct Run {
    /// Everything relayed by `feed`, concatenated.
    fed: Vec<u8>,
    /// What `finish` added (`None` when a feed failed: the relay then fails the stream).
    finished: Option<Vec<u8>>,
    error: Option<ScanError>,
    done: bool,
    errored: bool,
}

fn concat(out: &mut VecDeque<Bytes>) -> Vec<u8> {
    out.drain(..).flat_map(|b| b.to_vec()).collect()
}

fn run(strip: bool, chunks: &[&[u8]]) -> Run {
    let mut scanner = SseScanner::new(strip);
    let mut out = VecDeque::new();
    let mut fed = Vec::new();
    for chunk in chunks {
        let result = scanner.feed(Bytes::copy_from_slice(chunk), &mut out);
        fed.extend(concat(&mut out));
        if let Err(error) = result {
            assert_ne!(error, ScanError::EventTooLarge, "EventTooLarge on a small input");
            return Run { fed, finished: None, error: Some(error), done: scanner.done, errored: scanner.errored };
        }
    }
    scanner.finish(&mut out);
    let finished = Some(concat(&mut out));
    Run { fed, finished, error: None, done: scanner.done, errored: scanner.errored }
}

fn lenient_finish() -> bool {
    static LENIENT: OnceLock<bool> = OnceLock::new();
    *LENIENT.get_or_init(|| std::env::var_os("BRIDGE_FUZZ_SSE_LENIENT_FINISH").is_some())
}

fn show(chunks: &[&[u8]]) -> Vec<String> {
    chunks.iter().map(|c| format!("{:?}", String::from_utf8_lossy(c))).collect()
}

fuzz_target!(|data: &[u8]| {
    let (chunks, payload) = common::split(data);
    for strip in [false, true] {
        let whole = run(strip, &[payload]);
        let cut = run(strip, &chunks);
        for (name, r) in [("whole", &whole), ("cut", &cut)] {
            assert!(
                std::str::from_utf8(&r.fed).is_ok(),
                "strip={strip} {name}: feed relayed invalid UTF-8 {:?}\nchunks: {:?}",
                r.fed, show(&chunks)
            );
            if let (Some(fin), false) = (&r.finished, lenient_finish()) {
                assert!(
                    std::str::from_utf8(fin).is_ok(),
                    "strip={strip} {name}: finish relayed invalid UTF-8 {:?}\nchunks: {:?}",
                    String::from_utf8_lossy(fin), show(&chunks)
                );
            }
        }
        if whole.error.is_none() {
            let same = cut.error.is_none()
                && whole.fed.iter().chain(whole.finished.iter().flatten()).eq(cut.fed.iter().chain(cut.finished.iter().flatten()))
                && (whole.done, whole.errored) == (cut.done, cut.errored);
            assert!(
                same,
                "strip={strip}: output depends on chunking\nchunks: {:?}\nwhole: {:?} {:?} done={} errored={}\ncut:   {:?} {:?} {:?} done={} errored={}",
                show(&chunks),
                String::from_utf8_lossy(&whole.fed), whole.finished.as_deref().map(String::from_utf8_lossy), whole.done, whole.errored,
                cut.error, String::from_utf8_lossy(&cut.fed), cut.finished.as_deref().map(String::from_utf8_lossy), cut.done, cut.errored,
            );
        }
    }
});

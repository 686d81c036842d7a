//! SSE scanner: never panics, and what reaches the client (every output chunk, concatenated,
//! including what `finish` adds) and the `done` / `errored` flags do not depend on how the
//! engine's bytes were cut into chunks. Checked with and without usage stripping.
#![no_main]

mod common;

use std::collections::VecDeque;

use bridge::sse::SseScanner;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn run(strip: bool, chunks: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let mut scanner = SseScanner::new(strip);
    let mut out = VecDeque::new();
    for chunk in chunks {
        // Inputs are far below MAX_EVENT_BYTES, so feed never refuses.
        scanner
            .feed(Bytes::copy_from_slice(chunk), &mut out)
            .unwrap_or_else(|_| panic!("EventTooLarge on a small input"));
    }
    scanner.finish(&mut out);
    let joined = out.iter().flat_map(|b| b.iter().copied()).collect();
    (joined, scanner.done, scanner.errored)
}

fuzz_target!(|data: &[u8]| {
    let (chunks, payload) = common::split(data);
    for strip in [false, true] {
        let whole = run(strip, &[payload]);
        let cut = run(strip, &chunks);
        assert!(
            whole == cut,
            "strip={strip}: output depends on chunking\nchunks: {:?}\nwhole: {:?} done={} errored={}\ncut:   {:?} done={} errored={}",
            chunks.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>(),
            String::from_utf8_lossy(&whole.0), whole.1, whole.2,
            String::from_utf8_lossy(&cut.0), cut.1, cut.2,
        );
    }
});

//! Micro-benchmarks of the per-request and per-chunk work Bridge adds:
//! `cargo bench -p bridge --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;

use bridge::dialect::openai::stream::SseScanner;
use bridge::stage::route::route;
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A chat body of about `size` bytes with the routing field last (the scanner's worst case).
fn body(size: usize) -> Bytes {
    let head = r#"{"model":"m","temperature":0.7,"messages":[{"role":"user","content":""#;
    let tail = r#""}],"baseten":{"model_id":"llama","deployment_id":"v2"}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let text = format!("{head}{}{tail}", "lorem ipsum é ".repeat(pad / 15 + 1));
    Bytes::from(text)
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_and_cut");
    for size in [1 << 10, 100 << 10, 1 << 20] {
        let bytes = body(size);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| {
                let routed = route(black_box(bytes), &http::HeaderMap::new()).unwrap();
                black_box(routed.upstream_body(bytes, None, false))
            })
        });
    }
    group.finish();
}

fn sse(c: &mut Criterion) {
    let event = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}"#;
    let stream: String =
        (0..64).map(|_| format!("{event}\n\n")).collect::<String>() + "data: [DONE]\n\n";
    let stream = Bytes::from(stream);
    let mut group = c.benchmark_group("sse_scan");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    // One engine chunk per event (the usual case), and chunks cut at odd places.
    for (name, chunk) in [("event_aligned", event.len() + 2), ("split_97_bytes", 97)] {
        let chunks: Vec<Bytes> = if name == "event_aligned" {
            let mut v: Vec<Bytes> = (0..64)
                .map(|i| stream.slice(i * chunk..(i + 1) * chunk))
                .collect();
            v.push(stream.slice(64 * chunk..));
            v
        } else {
            (0..stream.len())
                .step_by(chunk)
                .map(|i| stream.slice(i..(i + chunk).min(stream.len())))
                .collect()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut scanner = SseScanner::default();
                let mut out = VecDeque::new();
                for c in &chunks {
                    scanner.feed(c.clone(), &mut out).unwrap();
                    out.clear();
                }
                scanner.finish(&mut out);
                black_box(scanner.done)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, routing, sse);
criterion_main!(benches);

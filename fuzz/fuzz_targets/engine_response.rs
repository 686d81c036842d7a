//! The engine side's HTTP/1.1 reader (`bridge::upstream::wire`): a response head, then its body
//! decoded by the framing the head gave, from bytes cut anywhere (see `common`). Asserts:
//!
//! 1. Nothing panics, and no data frame is empty.
//! 2. Split invariance: however the bytes are cut, the outcome is the same (the head's status,
//!    headers, framing and keep-alive, the body's bytes, and how it ended or failed).
//! 3. A body delimited by a length never yields more than that length, and all of it when it
//!    ends cleanly.
#![no_main]

mod common;

use bridge::upstream::wire::{parse_head, Decoded, Decoder, Framing, Parsed};
use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    NoHead,
    BadHead(String),
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        framing: Framing,
        keep_alive: bool,
        body: Vec<u8>,
        end: String,
    },
}

fn run(chunks: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut chunks = chunks.iter();
    let head = loop {
        match parse_head(&mut buf, &Method::POST) {
            Ok(Parsed::Final(head)) => break head,
            Ok(Parsed::Informational(len)) => {
                let _ = buf.split_to(len);
            }
            Ok(Parsed::Partial) => match chunks.next() {
                Some(chunk) => buf.extend_from_slice(chunk),
                None => return Outcome::NoHead,
            },
            Err(e) => return Outcome::BadHead(e.to_string()),
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut body = Vec::new();
    let end = loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "an empty data frame");
                body.extend_from_slice(&data);
            }
            Ok(Decoded::End) => break "end".to_string(),
            Ok(Decoded::NeedMore) => match chunks.next() {
                Some(chunk) => buf.extend_from_slice(chunk),
                None => {
                    break match decoder.at_eof() {
                        Ok(_) => "closed".to_string(),
                        Err(e) => e.to_string(),
                    }
                }
            },
            Err(e) => break e.to_string(),
        }
    };
    if let Framing::Length(n) = head.framing {
        assert!(body.len() as u64 <= n, "{} bytes of a {n}-byte body", body.len());
        if end == "end" {
            assert_eq!(body.len() as u64, n);
        }
    }
    Outcome::Response {
        status: head.status.as_u16(),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        framing: head.framing,
        keep_alive: head.keep_alive,
        body,
        end,
    }
}

fuzz_target!(|data: &[u8]| {
    let (chunks, payload) = common::split(data);
    let whole = run(&[payload]);
    let cut = run(&chunks);
    assert_eq!(whole, cut, "cut as {:?}", chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
});

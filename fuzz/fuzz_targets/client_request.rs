//! The client side's HTTP/1.1 reader (`bridge::server::head`): a request head, then its body
//! decoded by the framing the head gave (the decoder `server::body` uses), from bytes cut
//! anywhere (see `common`). Asserts:
//!
//! 1. Nothing panics, and no data frame is empty.
//! 2. Split invariance: however the bytes are cut, the outcome is the same (the head's method,
//!    target, headers, framing, keep-alive and `100-continue`, the body's bytes, how it ended).
//! 3. An accepted head never carries both `transfer-encoding` and `content-length` (the
//!    smuggling shape), and a length-delimited body yields exactly its length when it ends.
//! 4. The accepted headers, written back as a response head, parse as one, with the same
//!    values (what Bridge relays to a client is well-formed).
//! 5. The forward-only headers, kept as the engine's lines, parse as header lines: each a
//!    forward-only name in lowercase (what Bridge sends an engine is well-formed).
#![no_main]

mod common;

use bridge::server::head::{encode_response, parse_request, BodyLength, Framing};
use bridge::upstream::request::is_forward_only;
use bridge::upstream::wire::{Decoded, Decoder, Framing as WireFraming};
use bytes::BytesMut;
use http::{header, StatusCode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    NoHead,
    Refused(u16, String),
    Request {
        method: String,
        target: String,
        headers: Vec<(String, Vec<u8>)>,
        forward_only: Vec<u8>,
        body_length: BodyLength,
        keep_alive: bool,
        expect_continue: bool,
        body: Vec<u8>,
        end: String,
    },
}

fn run(chunks: &[&[u8]]) -> Outcome {
    let mut buf = BytesMut::new();
    let mut chunks = chunks.iter();
    let head = loop {
        match parse_request(&mut buf) {
            Ok(Some(head)) => break head,
            Ok(None) => match chunks.next() {
                Some(chunk) => buf.extend_from_slice(chunk),
                None => return Outcome::NoHead,
            },
            Err(e) => return Outcome::Refused(e.status.as_u16(), e.message.to_string()),
        }
    };
    assert!(
        !(head.headers.contains_key(header::TRANSFER_ENCODING)
            && head.headers.contains_key(header::CONTENT_LENGTH)),
        "both framing headers accepted"
    );
    let lines = [head.forward_only.as_bytes(), b"\r\n"].concat();
    let mut slots = vec![httparse::EMPTY_HEADER; lines.len() / 4 + 1];
    match httparse::parse_headers(&lines, &mut slots) {
        Ok(httparse::Status::Complete((len, parsed))) => {
            assert_eq!(len, lines.len());
            for h in parsed {
                assert!(is_forward_only(h.name.as_bytes()), "{} in the lines", h.name);
                assert!(!h.name.bytes().any(|b| b.is_ascii_uppercase()), "{}", h.name);
            }
        }
        other => panic!("the forward-only lines do not parse: {other:?}"),
    }
    let mut decoder = Decoder::new(match head.body {
        BodyLength::Length(n) => WireFraming::Length(n),
        BodyLength::Chunked => WireFraming::Chunked,
    });
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
                None => break "incomplete".to_string(),
            },
            Err(e) => break e.to_string(),
        }
    };
    if let BodyLength::Length(n) = head.body {
        assert!(body.len() as u64 <= n, "{} bytes of a {n}-byte body", body.len());
        if end == "end" {
            assert_eq!(body.len() as u64, n);
        }
    }
    let mut out = Vec::new();
    encode_response(&mut out, StatusCode::OK, &head.headers, Framing::Chunked, false);
    let mut slots = vec![httparse::EMPTY_HEADER; head.headers.len() + 4];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(&out) {
        Ok(httparse::Status::Complete(len)) => assert_eq!(len, out.len()),
        other => panic!("the response head does not parse: {other:?}"),
    }
    // The framing and connection headers, and `date`, are the server's own to write.
    let own = ["transfer-encoding", "content-length", "connection", "keep-alive", "date"];
    for h in response.headers.iter() {
        if own.iter().any(|o| h.name.eq_ignore_ascii_case(o)) {
            continue;
        }
        if let Some(value) = head.headers.get(h.name) {
            assert!(
                head.headers.get_all(h.name).iter().any(|v| v.as_bytes() == h.value),
                "{} changed: {:?} became {:?}",
                h.name,
                value,
                h.value
            );
        }
    }
    Outcome::Request {
        method: head.method.to_string(),
        target: head.uri.to_string(),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        forward_only: head.forward_only.as_bytes().to_vec(),
        body_length: head.body,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
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

//! Predict adapter.
//!
//! - `Utf8Carry`: for any bytes cut anywhere, valid UTF-8 comes out exactly as it went in, and
//!   input that is not UTF-8 is an error (from a push or from `finish()`) exactly when a
//!   one-piece decode fails: Bridge never changes a model's text.
//! - `adapt_request` (chat and completion, default settings) never panics, and when it accepts
//!   a body the predict body is a JSON object with the input field and a boolean `stream`.
#![no_main]

mod common;

use bridge::config::predict::settings;
use bridge::engine::predict::stream::Utf8Carry;
use bridge::engine::predict::{adapt_request, Kind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (chunks, payload) = common::split(data);
    let mut carry = Utf8Carry::default();
    let mut text = Some(String::new());
    for chunk in &chunks {
        match (carry.push(chunk), text.as_mut()) {
            (Ok(piece), Some(text)) => text.push_str(&piece),
            _ => text = None,
        }
    }
    if carry.finish().is_err() {
        text = None;
    }
    let expected = std::str::from_utf8(payload).ok();
    assert!(
        text.as_deref() == expected,
        "Utf8Carry differs from a one-piece decode\nchunks: {chunks:?}\ngot:      {text:?}\nexpected: {expected:?}"
    );
    // A finished carry starts afresh.
    assert!(carry.finish().is_ok());

    let Ok(settings) = settings(None) else {
        panic!("default predict settings are refused")
    };
    for (kind, field) in [(Kind::Chat, "messages"), (Kind::Completion, "prompt")] {
        if let Ok((body, context)) = adapt_request(payload, kind, &settings, "m") {
            let value: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => panic!("adapt_request returned invalid JSON ({e}): {body:?}"),
            };
            let Value::Object(map) = value else {
                panic!("adapt_request returned a non-object: {value:?}")
            };
            assert!(map.get(field).is_some_and(|v| !v.is_null()), "{field} missing: {map:?}");
            assert_eq!(map.get("stream"), Some(&Value::Bool(context.stream)));
            assert!(!map.contains_key("baseten") && !map.contains_key("model"));
            assert_eq!(context.kind, kind);
        }
    }
});

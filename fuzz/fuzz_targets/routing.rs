//! Routing and the JSON scanner.
//!
//! - `json::scan_object` accepts every JSON object serde_json accepts (serde_json stops at
//!   depth 128, below the scanner's `MAX_DEPTH` of 512), and, the other way round, whatever the
//!   scanner accepts is refused by serde_json only for serde_json's own limits (depth, numbers
//!   beyond f64, lone surrogate escapes), never for a grammar error.
//! - When `routing::route` accepts a body, both upstream bodies (plain, and with `model`
//!   replaced and usage injected when the route asks for it) are still accepted by the scanner;
//!   when the input is serde_json-readable they are too, have no `baseten` key, keep every
//!   other member, carry the new `model`, and carry `stream_options.include_usage` when added.
#![no_main]

use bridge::json::{scan_object, MAX_DEPTH};
use bridge::stage::route::route;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

// serde_json's limit is below the scanner's, so serde_json-readable means scanner-readable.
const _: () = assert!(128 < MAX_DEPTH);

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// serde_json refusals that are serde_json's limits, not JSON grammar errors.
fn serde_limit(e: &serde_json::Error) -> bool {
    let msg = e.to_string();
    [
        "recursion limit",
        "number out of range",
        "surrogate",
        "hex escape",
        "unicode code point",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

fn parse(out: &[u8], what: &str, input: &[u8]) -> serde_json::Map<String, Value> {
    match serde_json::from_slice::<Value>(out) {
        Ok(Value::Object(map)) => map,
        other => panic!(
            "{what} is not a JSON object: {other:?}\ninput: {:?}\noutput: {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(out)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(data);
    let scanned = scan_object(data);

    if let Ok(Value::Object(_)) = &parsed {
        if depth(parsed.as_ref().unwrap_or(&Value::Null)) < 128 {
            assert!(
                scanned.is_ok(),
                "serde_json accepts the object but scan_object says {scanned:?}"
            );
        }
    }
    if let Ok(members) = &scanned {
        match &parsed {
            Ok(v) => assert!(v.is_object(), "scanner accepted a non-object: {v:?}"),
            Err(e) => assert!(
                serde_limit(e),
                "scanner accepted a body serde_json rejects with a grammar error: {e}"
            ),
        }
        // Members are in order, disjoint, and inside the body.
        let mut last_end = 0;
        for m in members {
            assert!(last_end <= m.key.start && m.key.end <= m.value.start);
            assert!(m.value.end <= data.len());
            last_end = m.value.end;
        }
    }

    let Ok(routed) = route(data, &http::HeaderMap::new()) else { return };
    assert!(scanned.is_ok(), "route accepted a body scan_object refuses");
    let body = Bytes::from(data.to_vec());
    let plain = routed.upstream_body(&body, None, false).to_bytes();
    let inject = routed.wants_usage_injected();
    let renamed = routed.upstream_body(&body, Some("m"), inject).to_bytes();
    for (what, out) in [("plain upstream body", &plain), ("renamed upstream body", &renamed)] {
        if let Err(e) = scan_object(out) {
            panic!(
                "{what} is refused by the scanner ({e:?})\ninput: {:?}\noutput: {:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(out)
            );
        }
    }
    let Ok(Value::Object(mut input)) = parsed else { return };
    let had_model = input.contains_key("model");
    input.remove("baseten");

    let plain_map = parse(&plain, "plain upstream body", data);
    assert_eq!(plain_map, input, "plain upstream body lost or changed a member");

    let renamed_map = parse(&renamed, "renamed upstream body", data);
    assert!(!renamed_map.contains_key("baseten"));
    if had_model {
        assert_eq!(renamed_map.get("model"), Some(&Value::from("m")));
    }
    if inject {
        assert_eq!(
            renamed_map.get("stream_options"),
            Some(&serde_json::json!({"include_usage": true}))
        );
    }
    for (key, value) in &input {
        if key != "model" && key != "stream_options" {
            assert_eq!(renamed_map.get(key), Some(value), "renamed body changed '{key}'");
        }
    }
});

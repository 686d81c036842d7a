//! Engine error normalisation: for any engine body, `ApiError::from_engine(..).body()` is the
//! OpenAI envelope (`error.message` a non-empty string, `error.type` a string, `error.param`
//! and `error.code` a string or null), and the in-band SSE form is one event: `data: `, the
//! body with no raw newline, and one blank line.
#![no_main]

use bridge::error::ApiError;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn string_or_null(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(_) | Value::Null))
}

fuzz_target!(|data: &[u8]| {
    for status in [StatusCode::BAD_REQUEST, StatusCode::BAD_GATEWAY] {
        let error = ApiError::from_engine(status, data);
        let body = error.body();
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => panic!("envelope is not JSON ({e}): {body:?}"),
        };
        let inner = value.get("error").unwrap_or(&Value::Null);
        assert!(
            inner.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()),
            "error.message is not a non-empty string: {value}"
        );
        assert!(inner.get("type").is_some_and(Value::is_string), "error.type: {value}");
        assert!(string_or_null(inner.get("param")), "error.param: {value}");
        assert!(string_or_null(inner.get("code")), "error.code: {value}");
        assert!(!body.contains(&b'\n'), "raw newline in the envelope: {body:?}");
        let sse = error.sse_data();
        assert!(sse.starts_with(b"data: ") && sse.ends_with(b"\n\n"));
        assert_eq!(&sse[6..sse.len() - 2], &body[..]);
    }
});

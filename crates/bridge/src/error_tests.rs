use super::*;

fn inner(e: &ApiError) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    v["error"].clone()
}

#[test]
fn vllm_integer_code_becomes_string() {
    let body = br#"{"error":{"message":"bad","type":"BadRequestError","param":"x","code":400}}"#;
    let e = ApiError::from_engine(StatusCode::BAD_REQUEST, body);
    let v = inner(&e);
    assert_eq!(v["code"], "400");
    assert_eq!(v["message"], "bad");
    assert_eq!(v["type"], "BadRequestError");
    assert_eq!(v["param"], "x");
}

#[test]
fn flat_and_text_shapes_keep_the_message() {
    let flat = br#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#;
    assert_eq!(
        inner(&ApiError::from_engine(StatusCode::BAD_REQUEST, flat))["message"],
        "too long"
    );
    let text = ApiError::from_engine(StatusCode::INTERNAL_SERVER_ERROR, b"boom\n");
    assert_eq!(inner(&text)["message"], "boom");
    assert_eq!(inner(&text)["type"], "server_error");
    let detail = ApiError::from_engine(
        StatusCode::UNPROCESSABLE_ENTITY,
        br#"{"detail":[{"loc":1}]}"#,
    );
    assert_eq!(inner(&detail)["message"], r#"[{"loc":1}]"#);
    let empty = ApiError::from_engine(StatusCode::BAD_GATEWAY, b"");
    assert!(inner(&empty)["message"]
        .as_str()
        .unwrap_or_default()
        .contains("502"));
}

#[test]
fn sse_event_is_envelope_then_done() {
    let e = ApiError::bad_gateway("gone");
    let text = String::from_utf8(e.sse_event().to_vec()).unwrap_or_default();
    assert!(text.starts_with("data: {\"error\":{\"message\":\"gone\""));
    assert!(text.ends_with("\n\ndata: [DONE]\n\n"));
}

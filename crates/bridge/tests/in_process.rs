//! Routing and error shapes answered in process, through the same dispatch as the server but
//! with no socket: what Bridge decides before any engine is involved.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// A Bridge whose one model points at an address nothing listens on: nothing here may reach it.
fn bridge() -> bridge::app::App {
    let mut config = one_model("http://127.0.0.1:9/v1");
    config.insert_str(
        0,
        "[[auth.keys]]\nname = \"team\"\nkey = \"sk-team\"\nmodels = [\"m\"]\n",
    );
    Bridge::in_process(&config)
}

async fn call(
    method: Method,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = bridge().handle(request).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

/// Method, path, body, key; expected status and `code`.
type Case<'a> = (Method, &'a str, &'a str, Option<&'a str>, u16, &'a str);

#[tokio::test]
async fn refusals_before_any_engine_have_the_envelope_and_a_request_id() {
    let chat = "/v1/direct/chat/completions";
    let routed = json!({"model": "x", "baseten": {"model_id": "m"}}).to_string();
    let cases: [Case; 7] = [
        (
            Method::POST,
            "/v1/direct/nope",
            "{}",
            Some("sk-team"),
            404,
            "unknown_route",
        ),
        (
            Method::GET,
            chat,
            "",
            Some("sk-team"),
            405,
            "method_not_allowed",
        ),
        (Method::POST, chat, &routed, None, 401, "invalid_api_key"),
        (
            Method::POST,
            chat,
            &routed,
            Some("sk-other"),
            401,
            "invalid_api_key",
        ),
        (
            Method::POST,
            chat,
            "{\"model\": \"x\"}",
            Some("sk-team"),
            400,
            "missing_routing",
        ),
        (
            Method::POST,
            chat,
            "{\"model\": ",
            Some("sk-team"),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            chat,
            "{\"baseten\": {\"model_id\": \"other\"}}",
            Some("sk-team"),
            404,
            "model_not_found",
        ),
    ];
    for (method, path, body, key, status, code) in cases {
        let (got, headers, value) = call(method.clone(), path, body, key).await;
        assert_eq!(got.as_u16(), status, "{method} {path} {body}: {value}");
        assert_eq!(
            value["error"]["code"], code,
            "{method} {path} {body}: {value}"
        );
        assert!(value["error"]["message"].is_string(), "{value}");
        assert!(headers.contains_key("x-request-id"), "{method} {path}");
    }
    let (_, headers, _) = call(Method::GET, chat, "", Some("sk-team")).await;
    assert_eq!(headers["allow"], "POST");
}

#[tokio::test]
async fn the_model_list_and_health_are_answered_in_process() {
    let (status, _, list) = call(Method::GET, "/v1/direct/models", "", Some("sk-team")).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], "m", "{list}");
    let response = bridge()
        .handle(
            Request::get("/health")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
}

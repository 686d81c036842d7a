//! Every error row of the core: status, the OpenAI envelope (string-or-null `code`), the
//! parameter at fault, and that the process keeps serving afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

const URL: &str = "/v1/direct/chat/completions";

async fn setup() -> (Running, Running) {
    let engine = Sim::start().await;
    let config = format!(
        "[server]\nmax_request_bytes = 4096\nbody_read_timeout_ms = 300\n{}[[models.deployments]]\nid = \"slow\"\nreplicas = [\"{}\"]\n\
         [models.deployments.timeouts]\nfirst_byte_ms = 300\n\
         [[models.deployments]]\nid = \"down\"\nreplicas = [\"{}\"]\n",
        one_model(&engine.base()),
        engine.base(),
        closed_port().await
    );
    let bridge = Bridge::start(&config).await;
    (engine, bridge)
}

/// Asserts the reply is an error with `status`, `param`, `code` and a message containing `text`,
/// then checks that a good request still succeeds.
async fn expect(
    bridge: &Running,
    reply: Reply,
    status: u16,
    param: Option<&str>,
    code: Option<&str>,
    text: &str,
) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let error = reply.error();
    assert_eq!(error["param"].as_str(), param, "{error}");
    assert_eq!(error["code"].as_str(), code, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains(text),
        "want '{text}' in {error}"
    );
    let relayed = code.is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()));
    if relayed {
        // The engine's own errors keep the SDKs' usual retry rules.
        assert!(!reply.headers.contains_key("x-should-retry"), "{error}");
    } else if reply.status.is_client_error() {
        assert_eq!(
            reply.headers["x-should-retry"], "false",
            "client mistakes must not invite retries"
        );
    }
    let good = post(&bridge.url(URL), chat("m")).await;
    assert_eq!(good.status, 200, "Bridge stopped serving after: {error}");
}

#[tokio::test]
async fn routing_mistakes_are_400_with_a_hint() {
    let (_engine, bridge) = setup().await;
    let cases = [
        (json!({"model": "x"}), "baseten", "missing_routing"),
        (json!({"model": "x", "baseten": "m"}), "baseten", ""),
        (
            json!({"model": "x", "baseten": {"model_id": 5}}),
            "baseten.model_id",
            "",
        ),
        (
            json!({"model": "x", "baseten": {"deployment_id": "d1"}}),
            "baseten.model_id",
            "",
        ),
    ];
    for (body, param, code) in cases {
        let reply = post(&bridge.url(URL), body).await;
        let code = (!code.is_empty()).then_some(code);
        expect(
            &bridge,
            reply,
            400,
            Some(param),
            code,
            "extra_body={\"baseten\"",
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_model_and_deployment_are_404() {
    let (_engine, bridge) = setup().await;
    let reply = post(&bridge.url(URL), chat("nope")).await;
    expect(
        &bridge,
        reply,
        404,
        Some("baseten.model_id"),
        Some("model_not_found"),
        "'nope'",
    )
    .await;
    let body = json!({"model": "x", "baseten": {"model_id": "m", "deployment_id": "v9"}});
    let reply = post(&bridge.url(URL), body).await;
    expect(
        &bridge,
        reply,
        404,
        Some("baseten.deployment_id"),
        Some("deployment_not_found"),
        "'v9'",
    )
    .await;
    let reply = post(&bridge.url(URL), json!({"model": "baseten/m/v9"})).await;
    expect(
        &bridge,
        reply,
        404,
        Some("model"),
        Some("deployment_not_found"),
        "'v9'",
    )
    .await;
}

#[tokio::test]
async fn keys_are_checked_and_allow_lists_look_like_unknown_models() {
    let engine = Sim::start().await;
    let config = format!(
        "[[auth.keys]]\nname = \"a\"\nkey = \"sk-a\"\nmodels = [\"other\"]\n\
         [[auth.keys]]\nname = \"b\"\nkey = \"sk-b\"\n{}",
        one_model(&engine.base())
    );
    let bridge = Bridge::start(&config).await;
    let url = bridge.url(URL);
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Token sk-b")],
    ] {
        let reply = post_with(&url, chat("m"), &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.error()["type"], "authentication_error");
    }
    let ok = post_with(&url, chat("m"), &[("authorization", "Api-Key sk-b")]).await;
    assert_eq!(ok.status, 200);
    // Key `a` may not use `m`: the answer must be indistinguishable from a model that does not exist.
    let hidden = post_with(&url, chat("m"), &[("authorization", "Bearer sk-a")]).await;
    let missing = post_with(&url, chat("zz"), &[("authorization", "Bearer sk-a")]).await;
    assert_eq!(hidden.status, 404);
    let normalise = |r: &Reply| r.text().replace("'m'", "'?'").replace("'zz'", "'?'");
    assert_eq!(normalise(&hidden), normalise(&missing));
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let (_engine, bridge) = setup().await;
    let cases: [(&[u8], &str); 6] = [
        (b"{\"model\": ", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\"text\"", "must be a JSON object"),
        (b"{\"model\": \"\xff\xfe\"}", "not valid UTF-8"),
        (b"", "empty"),
        (b"{\"a\":1} trailing", "unexpected data"),
    ];
    for (body, text) in cases {
        let reply = send(
            Method::POST,
            &bridge.url(URL),
            Bytes::from_static(body),
            &[("content-type", "application/json")],
        )
        .await;
        expect(&bridge, reply, 400, None, Some("invalid_json"), text).await;
    }
    let reply = send(
        Method::POST,
        &bridge.url(URL),
        Bytes::from_static(b"{}"),
        &[("content-type", "text/plain")],
    )
    .await;
    expect(
        &bridge,
        reply,
        415,
        None,
        Some("unsupported_media_type"),
        "application/json",
    )
    .await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_without_reading_the_rest() {
    let (_engine, bridge) = setup().await;
    let big = json!({"model": "x", "messages": "a".repeat(5000), "baseten": {"model_id": "m"}});
    let reply = post(&bridge.url(URL), big).await;
    expect(
        &bridge,
        reply,
        413,
        None,
        Some("request_too_large"),
        "4096 bytes",
    )
    .await;
    // Declared too large: answered from the header alone, the body never sent.
    let head = "POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{";
    let answer = raw_exchange(bridge.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Chunked: refused once the limit is crossed, the end of the body never sent.
    let chunk = "a".repeat(5000);
    let chunked = format!(
        "POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    let answer = raw_exchange(bridge.addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let (_engine, bridge) = setup().await;
    let reply = post(&bridge.url("/v1/direct/nope"), chat("m")).await;
    expect(
        &bridge,
        reply,
        404,
        None,
        Some("unknown_route"),
        "/v1/direct/nope",
    )
    .await;
    let reply = get(&bridge.url(URL), &[]).await;
    assert_eq!(reply.headers["allow"], "POST");
    expect(
        &bridge,
        reply,
        405,
        None,
        Some("method_not_allowed"),
        "use POST",
    )
    .await;
    let reply = send(
        Method::DELETE,
        &bridge.url("/v1/direct/models"),
        Bytes::new(),
        &[],
    )
    .await;
    expect(&bridge, reply, 405, None, Some("method_not_allowed"), "GET").await;
}

#[tokio::test]
async fn unreachable_and_slow_engines_are_502_and_504() {
    let (_engine, bridge) = setup().await;
    let body = json!({"model": "x", "baseten": {"model_id": "m", "deployment_id": "down"}});
    let reply = post(&bridge.url(URL), body).await;
    expect(
        &bridge,
        reply,
        502,
        None,
        Some("upstream_unavailable"),
        "could not connect",
    )
    .await;
    let body = json!({"model": "x", "baseten": {"model_id": "m", "deployment_id": "slow"}, "simulate": {"delay_ms": 3000}});
    let reply = post(&bridge.url(URL), body).await;
    expect(
        &bridge,
        reply,
        504,
        None,
        Some("upstream_timeout"),
        "300 ms",
    )
    .await;
}

#[tokio::test]
async fn engine_errors_keep_status_and_message_with_a_string_code() {
    let (_engine, bridge) = setup().await;
    for (status, flat) in [
        (400, false),
        (404, true),
        (422, false),
        (500, false),
        (503, true),
    ] {
        let mut body = chat("m");
        body["simulate"] =
            json!({"status": status, "message": "context too long", "flat_error": flat});
        let reply = post(&bridge.url(URL), body).await;
        let code = status.to_string();
        expect(
            &bridge,
            reply,
            status,
            None,
            Some(&code),
            "context too long",
        )
        .await;
    }
    // Errors known before streaming starts are statuses, never a 200 stream.
    let mut body = chat("m");
    body["stream"] = json!(true);
    body["simulate"] = json!({"status": 400, "message": "bad"});
    let reply = post(&bridge.url(URL), body).await;
    expect(&bridge, reply, 400, None, Some("400"), "bad").await;
}

#[tokio::test]
async fn engine_rejecting_bridges_key_is_502_not_401() {
    let engine = Capture::json(401, json!({"error": "Unauthorized"})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let reply = post(&bridge.url(URL), chat("m")).await;
    assert_eq!(reply.status, 502);
    let error = reply.error();
    assert_eq!(error["code"], "upstream_auth_failed");
    assert!(error["message"].as_str().unwrap().contains("Unauthorized"));
}

#[tokio::test]
async fn busy_engines_keep_their_retry_after() {
    let engine = Capture::start(|_| async {
        http::Response::builder()
            .status(429)
            .header("retry-after", "3")
            .header("content-type", "application/json")
            .body(full_body(
                r#"{"error":{"message":"queue full","type":"rate_limit","code":429}}"#,
            ))
            .unwrap()
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let reply = post(&bridge.url(URL), chat("m")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "3");
    assert!(
        !reply.headers.contains_key("x-should-retry"),
        "the SDK must be free to retry a 429"
    );
    assert_eq!(reply.error()["message"], "queue full");
}

#[tokio::test]
async fn long_engine_error_bodies_are_cut_not_lost() {
    let message = "x".repeat(70_000);
    let engine = Capture::json(400, json!({"error": {"message": message, "code": 400}})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let reply = post(&bridge.url(URL), chat("m")).await;
    assert_eq!(reply.status, 400);
    let kept = reply.error()["message"].as_str().unwrap().to_string();
    // The first 64 KiB are read; no longer whole JSON, they are kept as text, cut to 4,096
    // characters: the engine's words survive instead of "no message".
    assert!(
        kept.starts_with(r#"{"error":{"message":"xxxx"#),
        "{}",
        &kept[..40]
    );
    assert_eq!(kept.chars().count(), 4096);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408() {
    let (_engine, bridge) = setup().await;
    let head = "POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mod";
    let answer = raw_exchange(bridge.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout"), "{answer}");
}

//! Every route an engine serves, each in its own API's dialect: the Responses API, Anthropic's
//! Messages API, rerank and score, tokenize and friends at the server root; header routing;
//! and paths that must never reach an engine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-team");

/// Model `m` on `base`, behind one client key.
fn keyed(base: &str) -> String {
    format!(
        "[[auth.keys]]\nname = \"team\"\nkey = \"sk-team\"\n{}",
        one_model(base)
    )
}

fn routed(mut body: Value) -> Value {
    body["baseten"] = json!({"model_id": "m"});
    body
}

/// The `(event, data)` pairs of a typed event stream.
fn typed_events(reply: &Reply) -> Vec<(String, Value)> {
    reply
        .text()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let kind = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_string();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (kind, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_responses_api_whole_and_streamed_with_its_usage_counted() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&keyed(&engine.base())).await;
    let url = bridge.url("/v1/direct/responses");
    let whole = post_with(
        &url,
        routed(json!({"model": "x", "input": "two words"})),
        &[KEY],
    )
    .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.json()["object"], "response");
    let input = whole.json()["usage"]["input_tokens"].as_u64().unwrap();

    let stream = post_with(
        &url,
        routed(json!({"model": "x", "input": "two words", "stream": true})),
        &[KEY],
    )
    .await;
    let events = typed_events(&stream);
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    assert!(!stream.text().contains("[DONE]"), "no [DONE] in this API");

    let metrics = get(&bridge.url("/metrics"), &[]).await.text();
    let prompt = metric(
        &metrics,
        "bridge_prompt_tokens_total{model=\"m\",deployment=\"d1\",key=\"team\"}",
    );
    assert_eq!(prompt, Some(2.0 * input as f64), "{metrics}");
    assert!(
        metrics.contains("route=\"responses\""),
        "the route label: {metrics}"
    );
}

#[tokio::test]
async fn a_broken_responses_stream_ends_with_the_apis_error_event() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/responses");
    for simulate in [
        json!({"fail_after": 3, "gap_ms": 20}),
        json!({"no_done": true}),
    ] {
        let request =
            routed(json!({"model": "x", "input": "hi", "stream": true, "simulate": simulate}));
        let reply = post(&url, request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let events = typed_events(&reply);
        let (kind, data) = events.last().unwrap();
        assert_eq!(kind, "error", "{events:?}");
        assert_eq!(data["type"], "error");
        assert!(
            data["code"].is_string() && data["message"].is_string(),
            "{data}"
        );
        assert_eq!(data["param"], Value::Null);
        let before = events[events.len() - 2].1["sequence_number"]
            .as_u64()
            .unwrap();
        assert_eq!(data["sequence_number"], before + 1, "{data}");
    }
}

#[tokio::test]
async fn responses_never_get_stream_options() {
    let engine = Capture::json(
        200,
        json!({"object": "response", "usage": {"input_tokens": 1, "output_tokens": 2}}),
    )
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let request = routed(json!({"model": "x", "input": "hi", "stream": true}));
    post(&bridge.url("/v1/responses"), request).await;
    let sent = engine.last();
    assert_eq!(sent.path, "/v1/responses");
    assert!(
        sent.json().get("stream_options").is_none(),
        "{}",
        sent.json()
    );
    assert!(sent.json().get("baseten").is_none());
}

/// A request body, its headers, and the status and Anthropic error type it must get.
type ErrorCase<'a> = (Value, &'a [(&'a str, &'a str)], u16, &'a str);

#[tokio::test]
async fn anthropic_messages_speak_anthropic_from_auth_to_the_last_error() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&keyed(&engine.base())).await;
    let url = bridge.url("/v1/messages");
    let ask = |extra: Value| {
        let mut body = routed(json!({"model": "x", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello there"}]}));
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    };
    let anthropic = [
        ("x-api-key", "sk-team"),
        ("anthropic-version", "2023-06-01"),
    ];
    let whole = post_with(&url, ask(json!({})), &anthropic).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.json()["type"], "message");

    let stream = post_with(&url, ask(json!({"stream": true})), &anthropic).await;
    let events = typed_events(&stream);
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");

    // Every error is Anthropic-shaped: Bridge's own and the engine's, before and in a stream.
    let cases: [ErrorCase; 4] = [
        (ask(json!({})), &[], 401, "authentication_error"),
        (
            ask(json!({"baseten": {"model_id": "nope"}})),
            &anthropic,
            404,
            "not_found_error",
        ),
        (
            ask(json!({"max_tokens": null})),
            &anthropic,
            400,
            "invalid_request_error",
        ),
        (
            // The engine's own type, when it is one of the API's, is kept.
            ask(json!({"simulate": {"status": 503}})),
            &anthropic,
            503,
            "api_error",
        ),
    ];
    for (body, headers, status, kind) in cases {
        let reply = post_with(&url, body, headers).await;
        assert_eq!(reply.status, status, "{}", reply.text());
        let error = reply.json();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let broken = post_with(
        &url,
        ask(json!({"stream": true, "simulate": {"fail_after": 2, "gap_ms": 20}})),
        &anthropic,
    )
    .await;
    let (kind, data) = typed_events(&broken).pop().unwrap();
    assert_eq!(kind, "error");
    assert_eq!(data["error"]["type"], "api_error", "{data}");

    let counted = post_with(
        &bridge.url("/v1/messages/count_tokens"),
        ask(json!({})),
        &anthropic,
    )
    .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert!(counted.json()["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn json_routes_land_where_engines_serve_them() {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    for (route, engine_path) in [
        ("rerank", "/v1/rerank"),
        ("score", "/v1/score"),
        ("tokenize", "/tokenize"),
        ("detokenize", "/detokenize"),
        ("pooling", "/pooling"),
        ("classify", "/classify"),
    ] {
        let reply = post(
            &bridge.url(&format!("/v1/direct/{route}")),
            routed(json!({"model": "x"})),
        )
        .await;
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        assert_eq!(engine.last().path, engine_path, "{route}");
    }
}

#[tokio::test]
async fn headers_route_bodies_that_cannot_carry_baseten() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/direct/tokenize");
    let reply = post_with(
        &url,
        json!({"model": "x", "prompt": "abc"}),
        &[("x-baseten-model-id", "m")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["count"], 3);
    let unknown = post_with(
        &url,
        json!({"prompt": "abc"}),
        &[
            ("x-baseten-model-id", "m"),
            ("x-baseten-deployment-id", "d9"),
        ],
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error()["code"], "deployment_not_found");
    let none = post(&url, json!({"prompt": "abc"})).await;
    assert_eq!(none.status, 400);
    assert!(
        none.text().contains("x-baseten-model-id"),
        "the hint names the headers"
    );
}

#[tokio::test]
async fn paths_outside_the_table_never_reach_an_engine() {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    for path in [
        "/v1/slots",
        "/v1/direct/sleep",
        "/v1/reset_prefix_cache",
        "/v1/load_lora_adapter",
        "/v1/direct/models/load",
        "/v1/direct/%2e%2e/slots",
        "/v1/direct/tokenize/..",
        "/v1/direct/..%2Fslots",
        "/v1/rerank%2F..%2Fslots",
        "/slots",
        "/tokenize",
    ] {
        let reply = post(&bridge.url(path), routed(json!({"model": "x"}))).await;
        // 405 for `models/load`: Bridge's own model lookup takes GET.
        assert!(
            [404, 405].contains(&reply.status.as_u16()),
            "{path}: {}",
            reply.text()
        );
    }
    assert_eq!(engine.count(), 0, "an engine was reached");
}

#[tokio::test]
async fn predict_deployments_refuse_other_apis_in_their_dialect() {
    let engine = Sim::start().await;
    let config = format!(
        "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d1\"\napi = \"predict\"\nreplicas = [\"{}\"]\n",
        engine.url("/predict")
    );
    let bridge = Bridge::start(&config).await;
    let responses = post(
        &bridge.url("/v1/responses"),
        routed(json!({"model": "x", "input": "hi"})),
    )
    .await;
    assert_eq!(responses.status, 400);
    assert_eq!(responses.error()["code"], "unsupported_endpoint");
    let messages = post(
        &bridge.url("/v1/messages"),
        routed(json!({"model": "x", "max_tokens": 5, "messages": []})),
    )
    .await;
    assert_eq!(messages.status, 400);
    assert_eq!(
        messages.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        messages.text()
    );
}

/// Model `m` on two replicas (each its own engine, each with its own stored responses), with
/// two client keys.
async fn two_replicas() -> (Running, Running, Running) {
    let (a, b) = (Sim::start().await, Sim::start().await);
    let config = format!(
        "[[auth.keys]]\nname = \"team\"\nkey = \"sk-team\"\n[[auth.keys]]\nname = \"other\"\nkey = \"sk-other\"\n\
         [[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d1\"\nreplicas = [\"{}\", \"{}\"]\nhealth_path = \"\"\n",
        a.base(),
        b.base()
    );
    (a, b, Bridge::start(&config).await)
}

#[tokio::test]
async fn stored_responses_are_reached_on_the_replica_that_made_them() {
    let (_a, _b, bridge) = two_replicas().await;
    let create = bridge.url("/v1/direct/responses");
    for stream in [false, true] {
        let reply = post_with(
            &create,
            routed(json!({"model": "x", "input": "hi", "stream": stream})),
            &[KEY],
        )
        .await;
        let id = if stream {
            typed_events(&reply)[0].1["response"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            reply.json()["id"].as_str().unwrap().to_string()
        };
        // With two replicas, a request that went to either at random would miss half the time.
        for _ in 0..8 {
            let got = get(&bridge.url(&format!("/v1/direct/responses/{id}")), &[KEY]).await;
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(got.json()["id"], id.as_str());
            let items = get(
                &bridge.url(&format!("/v1/responses/{id}/input_items")),
                &[KEY],
            )
            .await;
            assert_eq!(items.status, 200, "{}", items.text());
            let follow = post_with(
                &create,
                routed(json!({"model": "x", "input": "more", "previous_response_id": id})),
                &[KEY],
            )
            .await;
            assert_eq!(follow.status, 200, "{}", follow.text());
        }
        // Another key's response is unknown to it; so is an id Bridge never saw.
        let theirs = get(
            &bridge.url(&format!("/v1/responses/{id}")),
            &[("authorization", "Bearer sk-other")],
        )
        .await;
        assert_eq!(theirs.status, 404);
        assert_eq!(theirs.error()["code"], "response_not_found");
        let deleted = delete(&bridge.url(&format!("/v1/responses/{id}")), &[KEY]).await;
        assert_eq!(deleted.json()["deleted"], true, "{}", deleted.text());
    }
    let unknown = get(&bridge.url("/v1/responses/resp_unknown"), &[KEY]).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error()["code"], "response_not_found");
    // With keys, an id Bridge does not know may be another key's: headers do not route it.
    let by_header = get(
        &bridge.url("/v1/responses/resp_unknown"),
        &[KEY, ("x-baseten-model-id", "m")],
    )
    .await;
    assert_eq!(by_header.error()["code"], "response_not_found");
    // Without keys, the headers route it, and the engine answers for itself.
    let engine = Sim::start().await;
    let open = Bridge::start(&one_model(&engine.base())).await;
    let routed_by_header = get(
        &open.url("/v1/responses/resp_unknown"),
        &[("x-baseten-model-id", "m")],
    )
    .await;
    assert_eq!(routed_by_header.status, 404);
    assert!(
        routed_by_header
            .text()
            .contains("Response with id 'resp_unknown' not found"),
        "{}",
        routed_by_header.text()
    );
    // A query that fits in the client's URL but not, with the engine's address, in the
    // engine's: refused, never sent to another path (sent raw: no client builds such a URL).
    let request = format!(
        "GET /v1/responses/resp_unknown?after={} HTTP/1.1\r\nhost: x\r\nx-baseten-model-id: m\r\n\r\n",
        "a".repeat(65_490)
    );
    let too_long = raw_exchange(open.addr, request.as_bytes()).await;
    assert!(
        too_long.starts_with("HTTP/1.1 414"),
        "{}",
        &too_long[..too_long.len().min(300)]
    );
    let wrong_method = post_with(
        &bridge.url("/v1/responses/resp_1/input_items"),
        json!({}),
        &[KEY],
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET");
}

/// A multipart form with `fields` and a file part, as the OpenAI SDKs write it.
fn form(fields: &[(&str, &str)], file: &[u8]) -> (String, bytes::Bytes) {
    let boundary = "----bridge-test-7d3f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into(),
    )
}

#[tokio::test]
async fn audio_forms_are_routed_by_their_fields_and_forwarded_byte_for_byte() {
    let engine = Capture::json(200, json!({"text": "ok"})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let url = bridge.url("/v1/direct/audio/transcriptions");
    // Audio bytes that look like form syntax must pass untouched.
    let audio: Vec<u8> = b"RIFF\r\n--not-a-boundary\r\n\x00\xff\xfe"
        .iter()
        .copied()
        .chain((0..=255u8).cycle().take(70_000))
        .collect();
    let (content_type, body) = form(
        &[
            ("baseten[model_id]", "m"),
            ("model", "whisper-1"),
            ("baseten[deployment_id]", "d1"),
            ("language", "en"),
        ],
        &audio,
    );
    let headers = [("content-type", content_type.as_str())];
    let reply = send(http::Method::POST, &url, body.clone(), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = engine.last();
    assert_eq!(seen.path, "/v1/audio/transcriptions");
    let (expected_type, expected) = form(&[("model", "whisper-1"), ("language", "en")], &audio);
    assert_eq!(seen.headers["content-type"], expected_type.as_str());
    assert_eq!(
        seen.body, expected,
        "the routing parts are cut out, nothing else changes"
    );

    let (ct, unrouted) = form(&[("model", "whisper-1")], b"x");
    let missing = send(
        http::Method::POST,
        &url,
        unrouted,
        &[("content-type", ct.as_str())],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.error()["code"], "missing_routing");
    let long = "m".repeat(300);
    let (ct, oversized) = form(&[("baseten[model_id]", long.as_str())], b"x");
    let refused = send(
        http::Method::POST,
        &url,
        oversized,
        &[("content-type", ct.as_str())],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error()["param"], "baseten[model_id]");
    let json = post(&url, routed(json!({"model": "whisper-1"}))).await;
    assert_eq!(json.status, 415, "{}", json.text());
    assert_eq!(engine.count(), 1, "no refused form reached the engine");
}

#[tokio::test]
async fn transcriptions_come_back_as_the_engine_wrote_them() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    let url = bridge.url("/v1/audio/translations");
    let ask = |format: &str, stream: &str| {
        form(
            &[
                ("baseten[model_id]", "m"),
                ("model", "whisper-1"),
                ("response_format", format),
                ("stream", stream),
            ],
            b"audio bytes",
        )
    };
    let (ct, body) = ask("srt", "false");
    let srt = send(
        http::Method::POST,
        &url,
        body,
        &[("content-type", ct.as_str())],
    )
    .await;
    assert_eq!(srt.status, 200, "{}", srt.text());
    assert!(
        srt.text().starts_with("1\n00:00:00,000 --> "),
        "{}",
        srt.text()
    );
    assert!(
        srt.text().contains("file=a.wav, 11 bytes"),
        "{}",
        srt.text()
    );
    assert!(!srt.text().contains("baseten"), "{}", srt.text());
    let (ct, body) = ask("json", "true");
    let stream = send(
        http::Method::POST,
        &url,
        body,
        &[("content-type", ct.as_str())],
    )
    .await;
    let events = stream.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        stream.text()
    );
    assert!(
        events[0].contains("transcript.text.delta"),
        "{}",
        stream.text()
    );
}

#[tokio::test]
async fn operators_can_allow_more_engine_routes_per_deployment() {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let config = format!(
        "[[models]]\nid = \"m\"\nproduction = \"d1\"\n\
         [[models.deployments]]\nid = \"d1\"\nreplicas = [\"{0}\"]\nhealth_path = \"\"\nextra_routes = [\"audio/speech\"]\n\
         [[models.deployments]]\nid = \"d2\"\nreplicas = [\"{0}\"]\nhealth_path = \"\"\n",
        engine.server.base()
    );
    let bridge = Bridge::start(&config).await;
    let speech = post(
        &bridge.url("/v1/direct/audio/speech"),
        routed(json!({"model": "tts", "input": "hi"})),
    )
    .await;
    assert_eq!(speech.status, 200, "{}", speech.text());
    assert_eq!(engine.last().path, "/v1/audio/speech");
    assert!(engine.last().json().get("baseten").is_none());
    // Another deployment of the same model does not allow it; no other path is allowed.
    let mut pinned = routed(json!({"model": "tts"}));
    pinned["baseten"]["deployment_id"] = json!("d2");
    let refused = post(&bridge.url("/v1/audio/speech"), pinned).await;
    assert_eq!(refused.status, 404, "{}", refused.text());
    assert_eq!(refused.error()["code"], "unknown_route");
    let other = post(
        &bridge.url("/v1/audio/speech/../../slots"),
        routed(json!({})),
    )
    .await;
    assert_eq!(other.status, 404);
    assert_eq!(
        engine.count(),
        1,
        "only the allowed route reached the engine"
    );
    for bad in [
        "../slots",
        "/audio",
        "audio/%2e%2e",
        "chat/completions",
        "responses/x",
    ] {
        let config = one_model("http://127.0.0.1:9/v1") + &format!("extra_routes = [\"{bad}\"]\n");
        let error = bridge::config::Config::parse(&config, "t.toml")
            .unwrap()
            .validate("t.toml");
        assert!(error.is_err(), "{bad} was accepted");
    }
}

#[tokio::test]
async fn forms_whose_first_parts_route_are_cut_cleanly() {
    let engine = Capture::json(200, json!({"text": "ok"})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let url = bridge.url("/v1/audio/transcriptions");
    let (ct, body) = form(
        &[
            ("baseten[model_id]", "m"),
            ("baseten[deployment_id]", "d1"),
            ("model", "w"),
        ],
        b"x",
    );
    let reply = send(
        http::Method::POST,
        &url,
        body,
        &[("content-type", ct.as_str())],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, expected) = form(&[("model", "w")], b"x");
    assert!(engine.last().body == expected, "{:?}", engine.last().body);
    let (ct, body) = form(
        &[("baseten[deployment_id]", "d1"), ("model", "baseten/m")],
        b"x",
    );
    let half = send(
        http::Method::POST,
        &url,
        body,
        &[("content-type", ct.as_str())],
    )
    .await;
    assert_eq!(
        half.status,
        400,
        "a deployment without its model: {}",
        half.text()
    );
}

#[tokio::test]
async fn another_keys_response_is_reached_by_no_route() {
    let (_a, _b, bridge) = two_replicas().await;
    let mine = post_with(
        &bridge.url("/v1/responses"),
        routed(json!({"model": "x", "input": "hi"})),
        &[KEY],
    )
    .await;
    let id = mine.json()["id"].as_str().unwrap().to_string();
    let other = ("authorization", "Bearer sk-other");
    let by_header = get(
        &bridge.url(&format!("/v1/responses/{id}")),
        &[other, ("x-baseten-model-id", "m")],
    )
    .await;
    assert_eq!(by_header.status, 404);
    assert_eq!(by_header.error()["code"], "response_not_found");
    let follow = post_with(
        &bridge.url("/v1/responses"),
        routed(json!({"model": "x", "input": "go on", "previous_response_id": id})),
        &[other],
    )
    .await;
    assert_eq!(follow.status, 404, "{}", follow.text());
    assert_eq!(follow.error()["param"], "previous_response_id");
}

#[tokio::test]
async fn stored_routes_forward_the_query_and_ids_are_found_past_the_first_frame() {
    let engine = Capture::start(|captured: Captured| async move {
        if captured.method == http::Method::POST {
            // The id comes in the second frame of the answer.
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(bytes::Bytes::from_static(
                        b"{\"object\": \"response\", ",
                    )))
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx
                    .send(Ok(bytes::Bytes::from_static(
                        b"\"id\": \"resp_split\", \"status\": \"completed\"}",
                    )))
                    .await;
            });
            return http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
        }
        json_response(200, &json!({"object": "list", "data": []}))
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let created = post(
        &bridge.url("/v1/responses"),
        routed(json!({"model": "x", "input": "hi"})),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let items = get(
        &bridge.url("/v1/responses/resp_split/input_items?after=msg_1&limit=2"),
        &[],
    )
    .await;
    assert_eq!(items.status, 200, "the id was learned: {}", items.text());
    let seen = engine.last();
    assert_eq!(seen.path, "/v1/responses/resp_split/input_items");
    assert_eq!(seen.query.as_deref(), Some("after=msg_1&limit=2"));
}

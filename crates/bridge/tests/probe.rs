//! What an adversarial probe found, each kept as a regression: engines that redirect or switch
//! protocols, addresses in client errors, credentials in replica URLs and in other vendors'
//! headers, non-UTF-8 model text, a stream answered whole, the predict adapter's memory, and
//! ids that are path segments. Reloads and shutdown have their own files' worth below.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An engine that reads one request and answers it with `head` (raw bytes), then waits.
async fn raw_engine(head: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(head).await;
                // Keep the connection as an upgraded one would be: open, silent.
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    base
}

fn streaming(mut request: Value) -> Value {
    request["stream"] = json!(true);
    request
}

#[tokio::test]
async fn an_engine_switching_protocols_or_redirecting_gets_a_502_never_relayed() {
    let upgrade = raw_engine(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let redirect = Capture::start(|_| async {
        http::Response::builder()
            .status(307)
            .header("location", "http://elsewhere.invalid/steal")
            .body(full_body("moved"))
            .unwrap()
    })
    .await;
    for (base, code) in [
        (upgrade, "upstream_upgrade"),
        (redirect.server.base(), "upstream_redirect"),
    ] {
        let bridge = Bridge::start(&one_model(&base)).await;
        let url = bridge.url("/v1/direct/chat/completions");
        for request in [chat("m"), streaming(chat("m"))] {
            let reply = post(&url, request).await;
            assert_eq!(reply.status, 502, "{}", reply.text());
            assert_eq!(reply.error()["code"], code);
            assert!(!reply.headers.contains_key("location"));
            assert!(!reply.text().contains("elsewhere"), "{}", reply.text());
        }
    }
}

#[tokio::test]
async fn an_engine_answering_garbage_gets_a_502_that_says_so() {
    // Bridge reads engines' response heads itself (upstream/wire.rs): a head it cannot read is
    // a 502 naming the problem, not a closed connection.
    let garbage = raw_engine(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let bridge = Bridge::start(&one_model(&garbage)).await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let message = reply.error()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("invalid response from the engine: malformed response head"),
        "{message}"
    );
    assert!(!message.contains("closed"), "{message}");
}

#[tokio::test]
async fn client_errors_name_the_deployment_never_a_replica_address() {
    let dead = closed_port().await;
    let bridge = Bridge::start(&one_model(&dead)).await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(reply.status, 502);
    let message = reply.error()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("deployment 'd1' of model 'm'"),
        "{message}"
    );
    let port = dead.trim_end_matches("/v1").rsplit(':').next().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains(port),
        "{message}"
    );
}

#[tokio::test]
async fn credentials_in_a_replica_url_are_refused_without_echoing_them() {
    let config = one_model("http://user:hunter2@127.0.0.1:9/v1");
    let error = bridge::config::Config::parse(&config, "t.toml")
        .unwrap()
        .validate("t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("credentials") && error.contains("api_key_env"),
        "{error}"
    );
    assert!(
        !error.contains("hunter2") && !error.contains("user:"),
        "{error}"
    );
}

#[tokio::test]
async fn other_vendors_credential_headers_never_reach_the_engine() {
    let engine = Capture::json(200, json!({"ok": true})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let secrets = [
        ("x-goog-api-key", "g-secret"),
        ("x-amz-security-token", "amz-secret"),
        ("ocp-apim-subscription-key", "azure-secret"),
        ("x-portkey-api-key", "gateway-secret"),
        ("cf-access-client-secret", "cf-secret"),
    ];
    let reply = post_with(
        &bridge.url("/v1/direct/chat/completions"),
        chat("m"),
        &secrets,
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = engine.last().headers;
    for (name, _) in secrets {
        assert!(!seen.contains_key(name), "{name} reached the engine");
    }
}

#[tokio::test]
async fn a_stream_answered_whole_ends_with_an_in_band_error() {
    let engine = Capture::json(200, json!({"object": "chat.completion", "choices": []})).await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    let reply = post(
        &bridge.url("/v1/direct/chat/completions"),
        streaming(chat("m")),
    )
    .await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.text()
    );
    let error: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_not_streaming", "{error}");
}

/// A predict model at `engine` (its base URL is the predict URL), plus `extra` TOML.
fn predict_at(engine: &Capture, extra: &str) -> String {
    format!(
        "[[models]]\nid = \"p\"\n[[models.deployments]]\nid = \"v1\"\napi = \"predict\"\nreplicas = [\"{}\"]\n{extra}",
        engine.server.base()
    )
}

fn ask_predict(stream: bool) -> Value {
    json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
        "baseten": {"model_id": "p"}})
}

#[tokio::test]
async fn predict_text_that_is_not_utf8_is_an_error_never_replaced() {
    let engine = Capture::start(|_| async {
        http::Response::builder()
            .header("content-type", "text/plain")
            .body(full_body(&b"caf\xe9 au lait"[..]))
            .unwrap()
    })
    .await;
    let bridge = Bridge::start(&predict_at(&engine, "")).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let whole = post(&url, ask_predict(false)).await;
    assert_eq!(whole.status, 502, "{}", whole.text());
    assert_eq!(whole.error()["code"], "upstream_invalid_utf8");
    let stream = post(&url, ask_predict(true)).await;
    let events = stream.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        stream.text().contains("upstream_invalid_utf8"),
        "{}",
        stream.text()
    );
    assert!(!stream.text().contains('\u{fffd}'));
}

#[tokio::test]
async fn predict_answers_held_at_once_are_bounded_per_deployment() {
    // The first answer sends 40 KiB and then waits; the budget is 64 KiB.
    let (release, released) = tokio::sync::watch::channel(false);
    let (holding, mut held) = tokio::sync::watch::channel(false);
    let holding = std::sync::Arc::new(holding);
    let engine = Capture::start(move |captured: Captured| {
        let mut released = released.clone();
        let holding = holding.clone();
        async move {
            let size = captured.json()["size"].as_u64().unwrap_or(10) as usize;
            let hold = captured.json()["hold"].as_bool().unwrap_or(false);
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from(vec![b'a'; size]))).await;
                if hold {
                    holding.send_replace(true);
                    let _ = released.wait_for(|r| *r).await;
                }
            });
            http::Response::builder()
                .header("content-type", "text/plain")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let bridge = Bridge::start(&predict_at(
        &engine,
        "[models.deployments.predict]\nmax_buffered_bytes = 65536\nextra_fields = [\"size\", \"hold\"]\n",
    ))
    .await;
    let url = bridge.url("/v1/direct/chat/completions");
    let ask = |size: usize, hold: bool| {
        let mut request = ask_predict(false);
        request["size"] = json!(size);
        request["hold"] = json!(hold);
        request
    };
    let too_big = post(&url, ask(100_000, false)).await;
    assert_eq!(too_big.status, 502, "{}", too_big.text());
    assert!(too_big.text().contains("max_buffered_bytes"));

    let first = tokio::spawn({
        let url = url.clone();
        let request = ask(40 << 10, true);
        async move { post(&url, request).await }
    });
    // Once the engine sent the held answer's 40 KiB and Bridge had a moment to read them, no
    // second 40 KiB answer fits.
    held.wait_for(|h| *h).await.unwrap();
    let mut busy = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let reply = post(&url, ask(40 << 10, false)).await;
        if reply.status == 503 {
            busy = Some(reply);
            break;
        }
    }
    let busy = busy.expect("a second 40 KiB answer fit beside a held one in a 64 KiB budget");
    assert_eq!(busy.error()["code"], "deployment_busy");
    assert_eq!(busy.headers["retry-after"], "1");
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().status, 200);
    let after = post(&url, ask(40 << 10, false)).await;
    assert_eq!(after.status, 200, "the budget came back: {}", after.text());
}

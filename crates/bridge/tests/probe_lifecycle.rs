//! What an adversarial probe found in Bridge's lifecycle, kept as regressions: reloads that
//! would open the door or install an empty table, files that cannot be read, ids that are path
//! segments, streams cut at the drain timeout, and clients that half-close.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: (&str, &str) = ("authorization", "Bearer sk-admin");
const CLIENT: (&str, &str) = ("authorization", "Bearer sk-client");

/// Long enough for the file watch to see a change twice and act on it.
const WATCHED: Duration = Duration::from_millis(2600);

/// The admin table, a client key, and model `m` at `base`, written to a fresh directory.
fn write_config(base: &str) -> (PathBuf, PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "bridge-probe-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"ops\"\nkey = \"sk-admin\"\n\n\
         [[auth.keys]]\nname = \"client\"\nkey = \"sk-client\"\n\n{}",
        one_model(base)
    );
    std::fs::write(&path, &text).unwrap();
    (dir, path, text)
}

/// Bridge and its admin API still serve as the original file says.
async fn still_in_force(bridge: &Running, admin: &Running, why: &str) {
    let url = bridge.url("/v1/direct/chat/completions");
    assert_eq!(
        post(&url, chat("m")).await.status,
        401,
        "{why}: auth is off"
    );
    assert_eq!(
        post_with(&url, chat("m"), &[CLIENT]).await.status,
        200,
        "{why}"
    );
    let models = get(&admin.url("/v1/models"), &[ADMIN]).await;
    assert_eq!(models.status, 200, "{why}: the admin API went away");
}

fn write(path: &Path, text: &[u8]) {
    // Through a rename, as editors and config management do: never caught half-written.
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test]
async fn reloads_never_open_the_door_or_install_an_empty_table() {
    let engine = Sim::start().await;
    let (dir, path, text) = write_config(&engine.base());
    let (bridge, admin) = start_from_file(&path).await;
    still_in_force(&bridge, &admin, "at start").await;

    let without_keys = text.replace(
        "[[auth.keys]]\nname = \"client\"\nkey = \"sk-client\"\n",
        "",
    );
    let without_admin = text.replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"ops\"\nkey = \"sk-admin\"\n",
        "",
    );
    let without_models = text[..text.find("[[models]]").unwrap()].to_string();
    for (why, bad) in [
        ("every key removed", without_keys.as_bytes()),
        ("an empty file", &b""[..]),
        ("no models", without_models.as_bytes()),
        ("[admin] removed", without_admin.as_bytes()),
        ("not UTF-8", &b"\xff\xfe[[models]]"[..]),
    ] {
        write(&path, bad);
        tokio::time::sleep(WATCHED).await;
        still_in_force(&bridge, &admin, why).await;
    }

    // Said on purpose, an open Bridge is what the operator gets.
    let open = without_keys.replace("[[models]]", "[auth]\nopen = true\n\n[[models]]");
    write(&path, open.as_bytes());
    tokio::time::sleep(WATCHED).await;
    let url = bridge.url("/v1/direct/chat/completions");
    assert_eq!(post(&url, chat("m")).await.status, 200, "open = true");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_config_file_that_cannot_be_read_is_logged() {
    let engine = Sim::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        one_model(&engine.base())
    );
    let mut bridge = BridgeProcess::start("unreadable", &config, true);
    write(&bridge.config, b"\xff\xfe not UTF-8");
    tokio::time::sleep(WATCHED).await;
    let reply = post(
        &format!("{}/v1/direct/chat/completions", bridge.base),
        chat("m"),
    )
    .await;
    assert_eq!(reply.status, 200, "the config in force stays");
    bridge.child.kill().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut bridge.child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("cannot read the file") && logs.contains("not reloaded"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("cannot read the file").count(),
        1,
        "logged once: {logs}"
    );
}

#[tokio::test]
async fn ids_that_are_path_segments_or_hold_credentials_are_refused_by_the_admin_api() {
    let engine = Sim::start().await;
    let (dir, path, _) = write_config(&engine.base());
    let (_bridge, admin) = start_from_file(&path).await;
    let publish = admin.url("/v1/models/m/deployments");
    for id in [".", ".."] {
        let reply = post_with(
            &publish,
            json!({"id": id, "replicas": [engine.base()], "health_path": ""}),
            &[ADMIN],
        )
        .await;
        assert_eq!(reply.status, 400, "{id}: {}", reply.text());
    }
    let secret = engine.base().replace("http://", "http://ops:s3cret@");
    let reply = post_with(
        &publish,
        json!({"id": "v9", "replicas": [secret], "health_path": ""}),
        &[ADMIN],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(!reply.text().contains("s3cret"), "{}", reply.text());
    assert!(!std::fs::read_to_string(&path).unwrap().contains("s3cret"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn streams_still_open_at_the_drain_timeout_end_in_band() {
    let engine = Sim::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout_ms = 300\n{}",
        one_model(&engine.base())
    );
    let bridge = BridgeProcess::start("cut", &config, false);
    let mut request = chat("m");
    request["stream"] = json!(true);
    // Far longer than the drain timeout: 100 chunks 100 ms apart.
    request["simulate"] = json!({"chunks": 100, "gap_ms": 100});
    let response = open(
        &format!("{}/v1/direct/chat/completions", bridge.base),
        request,
    )
    .await;
    let mut body = response.into_body();
    next_chunk(&mut body).await.unwrap();
    bridge.terminate();
    let mut rest = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\"code\":\"shutting_down\""), "{text}");
}

/// Sends one request, half-closes, and reads what comes back (empty: nothing).
async fn half_closed_exchange(addr: std::net::SocketAddr) -> String {
    let body = json!({"model": "x", "baseten": {"model_id": "m"}}).to_string();
    let request = format!(
        "POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer and no close")
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn a_client_that_half_closes_is_answered_when_half_close_is_on() {
    let engine = Sim::start().await;
    let on = Bridge::start(&format!(
        "[server]\nhalf_close = true\n{}",
        one_model(&engine.base())
    ))
    .await;
    let answer = half_closed_exchange(on.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");
    // Off (the default), the end of the client's input is a disconnect: the request is
    // cancelled, so an abandoned request never runs on; TCP cannot tell the two apart.
    let off = Bridge::start(&one_model(&engine.base())).await;
    assert_eq!(half_closed_exchange(off.addr).await, "");
}

#[tokio::test]
async fn a_client_that_leaves_while_parked_frees_its_place() {
    let dead = closed_port().await;
    let bridge =
        Bridge::start(&(one_model(&dead) + "wake_timeout_ms = 1500\nmax_parked = 1\n")).await;
    let url = bridge.url("/v1/direct/chat/completions");
    // The only place in the queue, taken by a client that gives up.
    let _ = tokio::time::timeout(Duration::from_millis(300), post(&url, chat("m"))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = post(&url, chat("m")).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("did not become ready in time"),
        "the place was not given back: {}",
        reply.text()
    );
}

#[tokio::test]
async fn stored_responses_stay_their_keys_across_a_reload_that_renumbers_keys() {
    let engine = Sim::start().await;
    let (dir, path, _) = write_config(&engine.base());
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[[auth.keys]]\nname = \"client\"",
        "[[auth.keys]]\nname = \"first\"\nkey = \"sk-first\"\n\n[[auth.keys]]\nname = \"client\"",
    );
    write(&path, text.as_bytes());
    let (bridge, _admin) = start_from_file(&path).await;
    let first = ("authorization", "Bearer sk-first");
    let request = json!({"model": "x", "input": "hi", "baseten": {"model_id": "m"}});
    let made = post_with(&bridge.url("/v1/responses"), request, &[first]).await;
    let id = made.json()["id"].as_str().unwrap().to_string();
    // Without the first key, the client key is the first in the file.
    write(
        &path,
        text.replace(
            "[[auth.keys]]\nname = \"first\"\nkey = \"sk-first\"\n\n",
            "",
        )
        .as_bytes(),
    );
    tokio::time::sleep(WATCHED).await;
    let theirs = get(&bridge.url(&format!("/v1/responses/{id}")), &[CLIENT]).await;
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    std::fs::remove_dir_all(dir).unwrap();
}

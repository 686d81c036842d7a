//! Deployment lifecycle while traffic flows: publish, promote and retire through the admin API,
//! hot reload of the config file, and what survives a reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::sim::SimConfig;
use common::*;
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("authorization", "Bearer sk-admin");
const CLIENT: (&str, &str) = ("authorization", "Bearer sk-client");

/// An engine whose answers name it.
async fn engine(name: &str) -> Running {
    Sim::start_with(SimConfig {
        model: name.into(),
        chunks: 4,
        gap: Duration::from_millis(5),
        ..Default::default()
    })
    .await
}

/// A config file with model `m` (production `v1` at `v1`), keys, and comments to keep.
fn write_config(v1: &Running) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "bridge-lifecycle-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "# Operator's notes: keep me\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"ops\"\nkey = \"sk-admin\"\n\n\
             [[auth.keys]]\nname = \"client\"\nkey = \"sk-client\"\n\n\
             [[models]]\nid = \"m\" # the model\nproduction = \"v1\"\n\n\
             [[models.deployments]]\nid = \"v1\"\nreplicas = [\"{}\"] # first rack\nhealth_path = \"\"\n",
            v1.base()
        ),
    )
    .unwrap();
    (dir, path)
}

/// Which engine answered, from a JSON answer or a stream; `Err` with the reply when it failed.
fn served_by(reply: &Reply, stream: bool) -> Result<String, String> {
    let text = if stream {
        let events = reply.events();
        if reply.status != 200
            || events.last().map(String::as_str) != Some("[DONE]")
            || reply.text().contains("\"error\"")
        {
            return Err(format!("{} {}", reply.status, reply.text()));
        }
        events[..events.len() - 1]
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect::<String>()
    } else {
        if reply.status != 200 {
            return Err(format!("{} {}", reply.status, reply.text()));
        }
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    ["engine-v1", "engine-v2"]
        .into_iter()
        .find(|name| text.contains(name))
        .map(str::to_string)
        .ok_or(text)
}

struct Outcome {
    started: Instant,
    pinned: Option<&'static str>,
    result: Result<String, String>,
}

/// Steady load until `stop`: streaming and non-streaming, unpinned and pinned to `pin`.
fn load(
    url: String,
    pin: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    let mut tasks = Vec::new();
    for (pinned, stream) in [
        (None, false),
        (None, true),
        (Some(pin), false),
        (Some(pin), true),
    ] {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut body = chat("m");
                if let Some(d) = pinned {
                    body["baseten"]["deployment_id"] = json!(d);
                }
                body["stream"] = json!(stream);
                let started = Instant::now();
                let reply = post_with(&url, body, &[CLIENT]).await;
                outcomes.push(Outcome {
                    started,
                    pinned,
                    result: served_by(&reply, stream),
                });
            }
            outcomes
        }));
    }
    tasks
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    for o in &all {
        if let Err(e) = &o.result {
            panic!("a request failed under load: {e}");
        }
    }
    all
}

#[tokio::test]
async fn publish_then_promote_under_load_fails_nothing_and_moves_only_unpinned_traffic() {
    let (v1, v2) = (engine("engine-v1").await, engine("engine-v2").await);
    let (dir, path) = write_config(&v1);
    let (bridge, admin) = start_from_file(&path).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(
        bridge.url("/v1/direct/chat/completions"),
        "v1",
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let published = post_with(
        &admin.url("/v1/models/m/deployments"),
        json!({"id": "v2", "replicas": [v2.base()], "health_path": ""}),
        &[ADMIN],
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text());
    assert_eq!(published.json()["production"], false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let promoted = post_with(
        &admin.url("/v1/models/m/deployments/v2/promote"),
        json!({}),
        &[ADMIN],
    )
    .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json()["production"], "v2");
    let promoted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes = collect(tasks).await;

    let pinned: Vec<&Outcome> = outcomes.iter().filter(|o| o.pinned.is_some()).collect();
    assert!(
        pinned
            .iter()
            .all(|o| o.result.as_deref() == Ok("engine-v1")),
        "pinned requests left v1"
    );
    let after: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.pinned.is_none() && o.started > promoted_at)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|o| o.result.as_deref() == Ok("engine-v2")),
        "unpinned requests after the promotion did not move"
    );
    assert!(outcomes
        .iter()
        .any(|o| o.pinned.is_none() && o.result.as_deref() == Ok("engine-v1")));

    let text = std::fs::read_to_string(&path).unwrap();
    for comment in ["# Operator's notes: keep me", "# the model", "# first rack"] {
        assert!(text.contains(comment), "lost {comment:?}:\n{text}");
    }
    assert!(text.contains("production = \"v2\""), "{text}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn retiring_with_drain_lets_requests_finish_then_removes_the_deployment() {
    let (v1, v2) = (engine("engine-v1").await, engine("engine-v2").await);
    let (dir, path) = write_config(&v1);
    let (bridge, admin) = start_from_file(&path).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let published = post_with(
        &admin.url("/v1/models/m/deployments"),
        json!({"id": "v2", "replicas": [v2.base()], "health_path": ""}),
        &[ADMIN],
    )
    .await;
    assert_eq!(published.status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(url.clone(), "v1", stop.clone());
    // A slow stream pinned to v2 is under way when v2 is retired.
    let mut slow = chat("m");
    slow["baseten"]["deployment_id"] = json!("v2");
    slow["stream"] = json!(true);
    slow["simulate"] = json!({"chunks": 10, "gap_ms": 100});
    let slow_url = url.clone();
    let in_flight = tokio::spawn(async move { post_with(&slow_url, slow, &[CLIENT]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let production = delete(&admin.url("/v1/models/m/deployments/v1"), &[ADMIN]).await;
    assert_eq!(production.status, 409, "production cannot be retired");
    let retired = delete(
        &admin.url("/v1/models/m/deployments/v2?drain=true"),
        &[ADMIN],
    )
    .await;
    assert_eq!(retired.status, 202, "{}", retired.text());
    let mut pinned = chat("m");
    pinned["baseten"]["deployment_id"] = json!("v2");
    let refused = post_with(&url, pinned.clone(), &[CLIENT]).await;
    assert_eq!(
        refused.status, 404,
        "a retiring deployment takes no new requests"
    );

    let finished = in_flight.await.unwrap();
    assert_eq!(
        served_by(&finished, true),
        Ok("engine-v2".to_string()),
        "the stream in flight was cut"
    );
    // Once idle it leaves the file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&path).unwrap().contains("\"v2\"") {
        assert!(
            Instant::now() < deadline,
            "the drained deployment stayed in the file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    collect(tasks).await;
    assert_eq!(
        post_with(&url, pinned, &[CLIENT]).await.error()["code"],
        "deployment_not_found"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_broken_config_file_is_refused_and_a_fixed_one_is_taken() {
    let (v1, v2) = (engine("engine-v1").await, engine("engine-v2").await);
    let (dir, path) = write_config(&v1);
    let (bridge, _admin) = start_from_file(&path).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{good}\n[[models]]\nid = \"broken\nthis is not toml"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        assert_eq!(
            served_by(&post_with(&url, chat("m"), &[CLIENT]).await, false),
            Ok("engine-v1".into())
        );
    }
    // A valid change is picked up by the watch.
    let changed = good.replace("production = \"v1\"", "production = \"v2\"")
        + &format!(
            "\n[[models.deployments]]\nid = \"v2\"\nreplicas = [\"{}\"]\nhealth_path = \"\"\n",
            v2.base()
        );
    std::fs::write(&path, changed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = post_with(&url, chat("m"), &[CLIENT]).await;
        if served_by(&reply, false) == Ok("engine-v2".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed config was not taken: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn unchanged_deployments_keep_their_counters_and_replica_state_across_a_reload() {
    let v1 = engine("engine-v1").await;
    let (dir, path) = write_config(&v1);
    // A second deployment whose only replica refuses connections: one failure ejects it.
    let dead = closed_port().await;
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!("\n[[models.deployments]]\nid = \"dead\"\nreplicas = [\"{dead}\"]\nhealth_path = \"\"\neject_after = 1\nmax_retries = 0\n");
    std::fs::write(&path, text).unwrap();
    let (bridge, admin) = start_from_file(&path).await;
    let url = bridge.url("/v1/direct/chat/completions");
    for _ in 0..3 {
        assert_eq!(post_with(&url, chat("m"), &[CLIENT]).await.status, 200);
    }
    let mut to_dead = chat("m");
    to_dead["baseten"]["deployment_id"] = json!("dead");
    assert_eq!(post_with(&url, to_dead, &[CLIENT]).await.status, 502);
    // Any change reloads the table: here, a new model published through the admin API.
    let published = post_with(
        &admin.url("/v1/models/other/deployments"),
        json!({"id": "x", "replicas": [v1.base()], "health_path": ""}),
        &[ADMIN],
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.text());
    let metrics = get(&bridge.url("/metrics"), &[]).await.text();
    let kept = metric(
        &metrics,
        r#"bridge_requests_total{route="chat/completions",model="m",deployment="v1",key="client",status="2xx"}"#,
    );
    assert_eq!(kept, Some(3.0), "{metrics}");
    let ejected = metric(
        &metrics,
        &format!(r#"bridge_replica_ejected{{model="m",deployment="dead",replica="{dead}"}}"#),
    );
    assert_eq!(ejected, Some(1.0), "{metrics}");
    let models = get(&admin.url("/v1/models"), &[ADMIN]).await.json();
    assert_eq!(models["data"].as_array().unwrap().len(), 2);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn admin_routes_take_admin_keys_only() {
    let v1 = engine("engine-v1").await;
    let (dir, path) = write_config(&v1);
    let (bridge, admin) = start_from_file(&path).await;
    let models = admin.url("/v1/models");
    assert_eq!(get(&models, &[]).await.status, 401);
    assert_eq!(
        get(&models, &[CLIENT]).await.status,
        401,
        "a client key opened the admin API"
    );
    let promote = post_with(
        &admin.url("/v1/models/m/deployments/v1/promote"),
        json!({}),
        &[CLIENT],
    )
    .await;
    assert_eq!(promote.status, 401);
    // Prometheus scrapes the admin listener with an admin key.
    let scraped = get(&admin.url("/metrics"), &[ADMIN]).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.text().contains("bridge_replica_healthy"),
        "{}",
        scraped.text()
    );
    assert_eq!(get(&admin.url("/metrics"), &[CLIENT]).await.status, 401);
    let listed = get(&models, &[ADMIN]).await;
    assert_eq!(listed.status, 200);
    let deployment = &listed.json()["data"][0]["deployments"][0];
    assert_eq!(deployment["replicas"][0]["url"], v1.base());
    assert_eq!(deployment["replicas"][0]["healthy"], true);
    // And the admin key is no client key.
    let reply = post_with(
        &bridge.url("/v1/direct/chat/completions"),
        chat("m"),
        &[ADMIN],
    )
    .await;
    assert_eq!(reply.status, 401);
    // The API cannot pick which of the host's secrets go to which server.
    let secret = json!({"id": "v8", "replicas": ["http://127.0.0.1:9/v1"], "api_key_env": "HOME"});
    let refused = post_with(&admin.url("/v1/models/m/deployments"), secret, &[ADMIN]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error()["param"], "api_key_env");
    let bad = post_with(
        &admin.url("/v1/models/m/deployments"),
        json!({"id": "v9", "replicaz": []}),
        &[ADMIN],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.error()["message"]
        .as_str()
        .unwrap()
        .contains("replicaz"));
    std::fs::remove_dir_all(dir).ok();
}

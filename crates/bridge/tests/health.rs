//! Active health checks and parking while a deployment wakes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

/// An engine whose `/health` answers 200 or 503 as the test says, and that names itself.
async fn switchable(name: &'static str, healthy: Arc<AtomicBool>) -> Capture {
    Capture::start(move |req: Captured| {
        let healthy = healthy.load(Ordering::SeqCst);
        async move {
            if req.path == "/health" {
                json_response(if healthy { 200 } else { 503 }, &json!({}))
            } else {
                json_response(200, &json!({"who": name}))
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_unhealthy_replica_gets_no_work_until_it_passes_again() {
    let sick = Arc::new(AtomicBool::new(false));
    let a = switchable("a", sick.clone()).await;
    let b = switchable("b", Arc::new(AtomicBool::new(true))).await;
    let config = format!(
        "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"{}\", \"{}\"]\n\
         health_interval_ms = 50\nunhealthy_after = 1\n",
        a.server.base(),
        b.server.base()
    );
    let bridge = Bridge::start(&config).await;
    // Probes reach /health at the server root.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.seen.lock().unwrap().iter().any(|c| c.path == "/health"),
        "no probe at the server root"
    );
    for _ in 0..20 {
        assert_eq!(
            post(&bridge.url("/v1/direct/chat/completions"), chat("m"))
                .await
                .json()["who"],
            "b"
        );
    }
    assert_eq!(a.count(), 0, "the unhealthy replica got work");
    // The state is visible to operators (with addresses) and clients (without).
    let list = get(&bridge.url("/v1/direct/models"), &[]).await.json();
    let state = &list["data"][0]["deployments"][0]["replica_state"];
    assert_eq!(state[0]["healthy"], false, "{list}");
    assert_eq!(state[1]["healthy"], true, "{list}");
    assert!(
        !list.to_string().contains(&a.server.addr.to_string()),
        "an address leaked: {list}"
    );
    let metrics = get(&bridge.url("/metrics"), &[]).await.text();
    let a_healthy = format!(
        "bridge_replica_healthy{{model=\"m\",deployment=\"d\",replica=\"{}\"}} 0",
        a.server.base()
    );
    assert!(metrics.contains(&a_healthy), "{metrics}");
    sick.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..40 {
        post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    }
    assert!(a.count() > 0, "the recovered replica got no work");
}

#[tokio::test]
async fn parked_requests_succeed_when_the_replica_starts_late() {
    let (addr, reservation) = reserve_port();
    let wake = Capture::json(200, json!({})).await;
    let config = format!(
        "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"http://{addr}/v1\"]\n\
         health_interval_ms = 100\nwake_timeout_ms = 15000\nwake_url = \"{}\"\n",
        wake.server.url("/wake")
    );
    let bridge = Bridge::start(&config).await;
    let mut parked = Vec::new();
    for _ in 0..5 {
        let url = bridge.url("/v1/direct/chat/completions");
        parked.push(tokio::spawn(async move { post(&url, chat("m")).await }));
    }
    // The replica comes up 2 s later on its configured address.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(reservation);
    let _engine = Sim::start_at(addr).await;
    for request in parked {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(wake.count(), 1, "the wake URL is called once per wake-up");
    assert_eq!(wake.last().method, http::Method::POST);
}

#[tokio::test]
async fn parking_ends_in_503_with_retry_after() {
    let config = format!(
        "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"{}\"]\n\
         health_interval_ms = 100\nwake_timeout_ms = 400\n",
        closed_port().await
    );
    let bridge = Bridge::start(&config).await;
    let reply = post(&bridge.url("/v1/direct/chat/completions"), chat("m")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "5");
    assert_eq!(reply.error()["code"], "deployment_waking");
}

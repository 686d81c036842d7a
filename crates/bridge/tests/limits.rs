//! Limits of one instance (no Redis) over loopback: the 429 and its headers, and the
//! `x-ratelimit-*` headers on every answer to a limited key, failures included. Fleets sharing
//! Redis are tested end to end in tests/e2e/test_fleet.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const KEY: &str = "[[auth.keys]]\nname = \"a\"\nkey = \"sk-a\"\nrpm = 2\n";

#[tokio::test]
async fn a_limited_key_sees_its_limits_on_every_answer_and_a_429_past_them() {
    let sim = Sim::start().await;
    let bridge = Bridge::start(&format!("{KEY}{}", one_model(&sim.base()))).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let auth = [("authorization", "Bearer sk-a")];
    let first = post_with(&url, chat("m"), &auth).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining-requests"], "1");
    assert_eq!(post_with(&url, chat("m"), &auth).await.status, 200);
    let refused = post_with(&url, chat("m"), &auth).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error()["code"], "rate_limit_exceeded");
    assert_eq!(refused.error()["type"], "requests");
    // One request every 30 s: the next one fits in at most 30 s.
    let wait: u32 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&wait), "{wait}");
    assert!(refused.headers.get("x-should-retry").is_none());
    assert_eq!(refused.headers["x-ratelimit-remaining-requests"], "0");
}

#[tokio::test]
async fn an_admitted_request_that_fails_later_still_carries_the_headers() {
    let down = closed_port().await;
    let bridge = Bridge::start(&format!("{KEY}{}", one_model(&down))).await;
    let url = bridge.url("/v1/direct/chat/completions");
    let failed = post_with(&url, chat("m"), &[("authorization", "Bearer sk-a")]).await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(failed.headers["x-ratelimit-remaining-requests"], "1");
}

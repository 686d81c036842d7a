//! Routing: production default, pinned and null deployments, the `baseten/...` model form,
//! every route under both URL prefixes, and the model list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

/// Two deployments of `m`, each backed by a capturing engine that names itself in its answer.
async fn two_deployments() -> (Capture, Capture, Running) {
    let v1 = Capture::json(200, json!({"served_by": "v1"})).await;
    let v2 = Capture::json(200, json!({"served_by": "v2"})).await;
    let config = format!(
        "[[models]]\nid = \"m\"\nproduction = \"v2\"\n\
         [[models.deployments]]\nid = \"v1\"\nreplicas = [\"{}\"]\nserved_model = \"org/model-v1\"\n\
         [[models.deployments]]\nid = \"v2\"\nreplicas = [\"{}\"]\n",
        v1.server.base(),
        v2.server.base()
    );
    let bridge = Bridge::start(&config).await;
    (v1, v2, bridge)
}

#[tokio::test]
async fn production_serves_when_deployment_is_absent_or_null() {
    let (_v1, _v2, bridge) = two_deployments().await;
    let url = bridge.url("/v1/direct/chat/completions");
    let absent = post(&url, json!({"model": "x", "baseten": {"model_id": "m"}})).await;
    assert_eq!(absent.json()["served_by"], "v2");
    let null = post(
        &url,
        json!({"model": "x", "baseten": {"model_id": "m", "deployment_id": null}}),
    )
    .await;
    assert_eq!(null.json()["served_by"], "v2");
}

#[tokio::test]
async fn pinned_deployment_serves_even_when_not_production() {
    let (v1, _v2, bridge) = two_deployments().await;
    let url = bridge.url("/v1/direct/chat/completions");
    let reply = post(
        &url,
        json!({"model": "x", "baseten": {"model_id": "m", "deployment_id": "v1"}}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["served_by"], "v1");
    assert_eq!(
        v1.last().json()["model"],
        "x",
        "model is forwarded unchanged"
    );
}

#[tokio::test]
async fn model_name_form_routes_and_uses_the_served_model() {
    let (v1, v2, bridge) = two_deployments().await;
    let url = bridge.url("/v1/direct/chat/completions");
    let pinned = post(&url, json!({"model": "baseten/m/v1", "messages": []})).await;
    assert_eq!(pinned.json()["served_by"], "v1");
    assert_eq!(
        v1.last().json(),
        json!({"model": "org/model-v1", "messages": []})
    );

    // No served_model on v2: Bridge asks the replica's /models (the capture engine answers
    // every path with its JSON, which has no model list, so the lookup must fail clearly).
    let unknown_name = post(&url, json!({"model": "baseten/m", "messages": []})).await;
    assert_eq!(unknown_name.status, 502);
    assert!(unknown_name.error()["message"]
        .as_str()
        .unwrap()
        .contains("served_model"));
    assert_eq!(v2.last().path, "/v1/models");
}

#[tokio::test]
async fn model_name_form_learns_the_name_from_the_replica_once() {
    let engine = Capture::start(|req: Captured| async move {
        if req.path.ends_with("/models") {
            json_response(
                200,
                &json!({"object": "list", "data": [{"id": "org/reported", "object": "model"}]}),
            )
        } else {
            json_response(200, &json!({"model_sent": req.json()["model"]}))
        }
    })
    .await;
    let bridge = Bridge::start(&one_model(&engine.server.base())).await;
    for _ in 0..3 {
        let reply = post(
            &bridge.url("/v1/chat/completions"),
            json!({"model": "baseten/m", "messages": []}),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["model_sent"], "org/reported");
    }
    let lookups = engine
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path == "/v1/models")
        .count();
    assert_eq!(lookups, 1, "the reported name is cached");
}

#[tokio::test]
async fn every_route_works_under_both_prefixes() {
    let engine = Sim::start().await;
    let bridge = Bridge::start(&one_model(&engine.base())).await;
    for prefix in ["/v1/direct", "/v1"] {
        let chat_reply = post(
            &bridge.url(&format!("{prefix}/chat/completions")),
            chat("m"),
        )
        .await;
        assert_eq!(chat_reply.json()["object"], "chat.completion", "{prefix}");
        let completion = post(
            &bridge.url(&format!("{prefix}/completions")),
            json!({"model": "e", "prompt": "hi", "baseten": {"model_id": "m"}}),
        )
        .await;
        assert_eq!(completion.json()["object"], "text_completion", "{prefix}");
        let embedding = post(
            &bridge.url(&format!("{prefix}/embeddings")),
            json!({"model": "e", "input": ["a", "b"], "baseten": {"model_id": "m"}}),
        )
        .await;
        assert_eq!(
            embedding.json()["data"].as_array().unwrap().len(),
            2,
            "{prefix}"
        );
        let models = get(&bridge.url(&format!("{prefix}/models")), &[]).await;
        assert_eq!(models.json()["data"][0]["id"], "m", "{prefix}");
        let trailing = post(
            &bridge.url(&format!("{prefix}/chat/completions/")),
            chat("m"),
        )
        .await;
        assert_eq!(trailing.status, 200, "{prefix} with a trailing slash");
    }
    let health = get(&bridge.url("/health"), &[]).await;
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "ok")
    );
}

#[tokio::test]
async fn model_list_shows_deployments_and_production() {
    let (_v1, _v2, bridge) = two_deployments().await;
    let list = get(&bridge.url("/v1/direct/models"), &[]).await.json();
    assert_eq!(list["object"], "list");
    let model = &list["data"][0];
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "bridge");
    assert!(model["created"].as_u64().unwrap() > 0);
    assert_eq!(model["production"], "v2");
    let ids: Vec<_> = model["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(ids, [json!("v1"), json!("v2")]);
    assert_eq!(model["deployments"][1]["production"], true);
    let one = get(&bridge.url("/v1/direct/models/m"), &[]).await;
    assert_eq!(one.json()["id"], "m");
    let missing = get(&bridge.url("/v1/direct/models/nope"), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error()["code"], "model_not_found");
}

#[tokio::test]
async fn keys_see_only_their_models() {
    let engine = Sim::start().await;
    let config = format!(
        "[[auth.keys]]\nname = \"a\"\nkey = \"sk-a\"\nmodels = [\"m\"]\n\
         [[auth.keys]]\nname = \"all\"\nkey = \"sk-all\"\n\
         {}[[models]]\nid = \"secret\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"{}\"]\n",
        one_model(&engine.base()),
        engine.base()
    );
    let bridge = Bridge::start(&config).await;
    let ids = |reply: Reply| -> Vec<String> {
        reply.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let a = get(
        &bridge.url("/v1/direct/models"),
        &[("authorization", "Bearer sk-a")],
    )
    .await;
    assert_eq!(ids(a), ["m"]);
    let all = get(
        &bridge.url("/v1/models"),
        &[("authorization", "Api-Key sk-all")],
    )
    .await;
    assert_eq!(ids(all), ["m", "secret"]);
    let hidden = get(
        &bridge.url("/v1/direct/models/secret"),
        &[("authorization", "Bearer sk-a")],
    )
    .await;
    assert_eq!(hidden.status, 404);
    let anonymous = get(&bridge.url("/v1/direct/models"), &[]).await;
    assert_eq!(anonymous.status, 401);
}

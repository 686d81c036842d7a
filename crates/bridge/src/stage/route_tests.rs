use super::*;
use proptest::prelude::*;
use serde_json::Value;
use serde_json::{json, Map};

fn forwarded(body: &str, new_model: Option<&str>) -> (Routing, Value) {
    let bytes = Bytes::copy_from_slice(body.as_bytes());
    let routed = route(&bytes, &http::HeaderMap::new()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
    let out = routed.upstream_body(&bytes, new_model, false).to_bytes();
    let value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&out)));
    (routed.routing, value)
}

fn err(body: &str) -> ApiError {
    route(body.as_bytes(), &http::HeaderMap::new())
        .err()
        .unwrap_or_else(|| panic!("accepted {body}"))
}

#[test]
fn baseten_is_removed_and_everything_else_kept_byte_for_byte() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"baseten":{"model_id":"llama","deployment_id":"v2"},"top_k":5,"x":1.50}"#;
    let bytes = Bytes::copy_from_slice(body.as_bytes());
    let routed = route(&bytes, &http::HeaderMap::new()).unwrap();
    assert_eq!(
        routed.routing,
        Routing {
            model_id: "llama".into(),
            deployment_id: Some("v2".into()),
            from_model_name: false
        }
    );
    let out = routed.upstream_body(&bytes, None, false).to_bytes();
    assert_eq!(
        &out[..],
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":5,"x":1.50}"#
    );
}

#[test]
fn null_or_absent_deployment_means_production() {
    for body in [
        r#"{"baseten":{"model_id":"a","deployment_id":null}}"#,
        r#"{"baseten":{"model_id":"a"}}"#,
    ] {
        let (routing, rest) = forwarded(body, None);
        assert_eq!(routing.deployment_id, None);
        assert_eq!(rest, json!({}));
    }
}

#[test]
fn model_name_form_routes_and_replaces_model() {
    let (routing, rest) = forwarded(
        r#"{"model":"baseten/llama/v3","stream":true}"#,
        Some("meta/Llama"),
    );
    assert_eq!(routing.model_id, "llama");
    assert_eq!(routing.deployment_id.as_deref(), Some("v3"));
    assert!(routing.from_model_name);
    assert_eq!(rest, json!({"model": "meta/Llama", "stream": true}));
    let (routing, _) = forwarded(r#"{"model":"baseten/llama"}"#, None);
    assert_eq!(routing.deployment_id, None);
}

#[test]
fn body_field_wins_over_model_form() {
    let (routing, rest) = forwarded(r#"{"model":"baseten/x","baseten":{"model_id":"y"}}"#, None);
    assert_eq!(routing.model_id, "y");
    assert!(!routing.from_model_name);
    assert_eq!(rest, json!({"model": "baseten/x"}));
}

#[test]
fn routing_mistakes_name_the_field() {
    let cases = [
        (
            r#"{"model":"m"}"#,
            Some("baseten"),
            "no routing information",
        ),
        (r#"{}"#, Some("baseten"), "extra_body"),
        (
            r#"{"baseten":"llama"}"#,
            Some("baseten"),
            "must be an object, not a string",
        ),
        (r#"{"baseten":[1]}"#, Some("baseten"), "not an array"),
        (r#"{"baseten":null}"#, Some("baseten"), "not null"),
        (r#"{"baseten":{}}"#, Some("baseten.model_id"), "missing"),
        (
            r#"{"baseten":{"model_id":7}}"#,
            Some("baseten.model_id"),
            "not a number",
        ),
        (
            r#"{"baseten":{"model_id":""}}"#,
            Some("baseten.model_id"),
            "1 to 256",
        ),
        (
            r#"{"baseten":{"model_id":"a","deployment_id":true}}"#,
            Some("baseten.deployment_id"),
            "not a boolean",
        ),
        (
            r#"{"baseten":{"model_id":"a"},"baseten":{"model_id":"b"}}"#,
            Some("baseten"),
            "more than one",
        ),
        (
            r#"{"baseten":{"model_id":"a"},"bas\u0065ten":{"model_id":"b"}}"#,
            Some("baseten"),
            "more than one",
        ),
        (r#"{"model":"baseten/"}"#, Some("model"), "1 to 256"),
        (r#"{"model":"m""#, None, "not valid JSON"),
        (r#"[]"#, None, "must be a JSON object"),
    ];
    for (body, param, text) in cases {
        let e = err(body);
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(e.param.as_deref(), param, "{body}");
        assert!(e.message.contains(text), "{body}: {}", e.message);
    }
    let long = format!(r#"{{"baseten":{{"model_id":"{}"}}}}"#, "a".repeat(10_000));
    assert_eq!(err(&long).param.as_deref(), Some("baseten.model_id"));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Removing the routing field and re-parsing yields the original object minus that key,
    /// wherever the key stands and however the JSON is spaced.
    #[test]
    fn removal_preserves_every_other_member(
        map in prop::collection::btree_map("[a-z_]{1,8}", arb_json(), 0..8),
        position in 0usize..9,
        pretty in any::<bool>(),
    ) {
        let mut entries: Vec<(String, Value)> = map.into_iter().filter(|(k, _)| k != "baseten").collect();
        let at = position.min(entries.len());
        entries.insert(at, ("baseten".into(), json!({"model_id": "m", "deployment_id": null})));
        let object: Map<String, Value> = entries.into_iter().collect();
        let text = if pretty {
            serde_json::to_string_pretty(&object).unwrap()
        } else {
            serde_json::to_string(&object).unwrap()
        };
        let (routing, rest) = forwarded(&text, None);
        prop_assert_eq!(routing.model_id, "m");
        // The oracle is the sent text as a parser reads it, so float formatting cannot differ.
        let mut original: Map<String, Value> = serde_json::from_str(&text).unwrap();
        prop_assert!(original.remove("baseten").is_some());
        prop_assert_eq!(rest, Value::Object(original));
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::request::adapt_request;
use super::stream::{ChunkWriter, InvalidUtf8, Utf8Carry};
use super::*;
use crate::config::predict::settings;
use crate::config::predict::PredictSettings;
use crate::config::PredictConfig;

fn defaults() -> PredictSettings {
    settings(None).unwrap()
}

fn adapt(body: Value) -> Result<(Value, Context), crate::error::ApiError> {
    let (bytes, context) =
        adapt_request(body.to_string().as_bytes(), Kind::Chat, &defaults(), "m")?;
    Ok((serde_json::from_slice(&bytes).unwrap(), context))
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "my-model", "messages": [{"role": "user", "content": "hi"}],
        "baseten": {"model_id": "m"}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn utf8_split_anywhere_is_carried_never_replaced() {
    let text = "aé✓👋🏽z";
    let bytes = text.as_bytes();
    for cut1 in 0..=bytes.len() {
        for cut2 in cut1..=bytes.len() {
            let mut carry = Utf8Carry::default();
            let mut out = carry.push(&bytes[..cut1]).unwrap();
            out += &carry.push(&bytes[cut1..cut2]).unwrap();
            out += &carry.push(&bytes[cut2..]).unwrap();
            carry.finish().unwrap();
            assert_eq!(out, text, "cut at {cut1} and {cut2}");
        }
    }
}

#[test]
fn invalid_utf8_is_an_error_never_a_replacement() {
    let mut carry = Utf8Carry::default();
    assert_eq!(carry.push(b"a\xffb"), Err(InvalidUtf8));
    let mut carry = Utf8Carry::default();
    assert_eq!(carry.push(b"ok \xf0\x9f").as_deref(), Ok("ok "));
    assert_eq!(
        carry.finish(),
        Err(InvalidUtf8),
        "a character that never completed"
    );
}

#[test]
fn the_predict_body_has_the_input_stream_and_only_what_the_client_set() {
    let (body, context) = adapt(chat(
        json!({"temperature": 0.5, "max_tokens": 7, "stop": ["x"],
        "user": "u1", "n": 1, "top_p": null}),
    ))
    .unwrap();
    assert_eq!(
        body,
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": false,
            "temperature": 0.5, "max_tokens": 7, "stop": ["x"]})
    );
    assert_eq!(context.model, "my-model");
    assert!(context.id.starts_with("chatcmpl-") && context.id.len() == 9 + 36);
    let (body, context) = adapt(chat(json!({"stream": true,
        "stream_options": {"include_usage": true}})))
    .unwrap();
    assert_eq!(body["stream"], true);
    assert!(context.stream && context.include_usage);
    assert!(body.get("stream_options").is_none() && body.get("baseten").is_none());
}

#[test]
fn every_unsupported_parameter_is_a_400_naming_it() {
    let image = json!([{"role": "user", "content": [{"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]);
    let audio = json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]);
    let cases = [
        (json!({"tools": [{"type": "function"}]}), "tools"),
        (json!({"tool_choice": "auto"}), "tool_choice"),
        (json!({"functions": []}), "functions"),
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "response_format",
        ),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"messages": image}), "messages[0].content[1]"),
        (json!({"messages": audio}), "messages[0].content[0]"),
        (json!({"top_k": 5}), "top_k"),
    ];
    for (extra, param) in cases {
        let error = adapt(chat(extra.clone())).unwrap_err();
        assert_eq!(error.status, 400, "{extra}");
        assert_eq!(error.param.as_deref(), Some(param), "{extra}");
        assert_eq!(
            error.code.as_deref(),
            Some("unsupported_parameter"),
            "{extra}"
        );
        assert!(
            error.message.contains("predict adapter"),
            "{}",
            error.message
        );
    }
    // What costs nothing to honour is accepted.
    for extra in [
        json!({"response_format": {"type": "text"}}),
        json!({"logprobs": false}),
        json!({"logit_bias": {}}),
        json!({"tools": null}),
    ] {
        assert!(adapt(chat(extra.clone())).is_ok(), "{extra}");
    }
}

#[test]
fn renames_and_extra_fields_come_from_the_deployment() {
    let config = PredictConfig {
        output_key: Some("generated_text".into()),
        rename: [("max_tokens".to_string(), "max_new_tokens".to_string())].into(),
        extra_fields: vec!["top_k".into()],
        ..PredictConfig::default()
    };
    let settings = settings(Some(&config)).unwrap();
    let body = chat(json!({"max_completion_tokens": 9, "top_k": 3}));
    let (bytes, context) =
        adapt_request(body.to_string().as_bytes(), Kind::Chat, &settings, "m").unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sent["max_new_tokens"], 9);
    assert_eq!(sent["top_k"], 3);
    assert!(sent.get("max_tokens").is_none());
    assert_eq!(context.output_key, "generated_text");
}

#[test]
fn bad_predict_settings_are_config_errors() {
    let bad = |rename: &[(&str, &str)], extra: &[&str]| {
        settings(Some(&PredictConfig {
            output_key: None,
            rename: rename
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            extra_fields: extra.iter().map(|s| s.to_string()).collect(),
            ..PredictConfig::default()
        }))
        .unwrap_err()
    };
    assert!(bad(&[("messagez", "x")], &[]).contains("messagez"));
    assert!(bad(&[("top_p", "p"), ("temperature", "p")], &[]).contains("both"));
    assert!(bad(&[], &["tools"]).contains("tools"));
    assert!(bad(&[("temperature", "top_p")], &[]).contains("already sends"));
    assert!(bad(&[("max_tokens", "messages")], &[]).contains("already sends"));
    // Swapping two names is fine: each is renamed.
    assert!(settings(Some(&PredictConfig {
        output_key: None,
        rename: [
            ("top_p".to_string(), "temperature".to_string()),
            ("temperature".to_string(), "top_p".to_string())
        ]
        .into(),
        extra_fields: vec![],
        ..PredictConfig::default()
    }))
    .is_ok());
}

#[test]
fn completions_take_a_prompt() {
    let body = json!({"model": "m", "prompt": "Say hi", "max_tokens": 3});
    let (bytes, context) = adapt_request(
        body.to_string().as_bytes(),
        Kind::Completion,
        &defaults(),
        "m",
    )
    .unwrap();
    let sent: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        sent,
        json!({"prompt": "Say hi", "stream": false, "max_tokens": 3})
    );
    assert!(context.id.starts_with("cmpl-"));
    let missing = adapt_request(br#"{"model":"m"}"#, Kind::Completion, &defaults(), "m");
    assert_eq!(missing.unwrap_err().param.as_deref(), Some("prompt"));
}

#[test]
fn stream_events_are_valid_chunks() {
    let (_, mut context) = adapt(chat(json!({}))).unwrap();
    context.include_usage = true;
    let writer = ChunkWriter::new(&context);
    let mut events: VecDeque<bytes::Bytes> = writer.role().into_iter().collect();
    events.push_back(writer.content("quote \" and 👋"));
    writer.end(true, &json!({"prompt_tokens": 0}), &mut events);
    let payloads: Vec<String> = events
        .iter()
        .map(|e| {
            let text = std::str::from_utf8(e).unwrap();
            assert!(
                text.starts_with("data: ") && text.ends_with("\n\n"),
                "{text}"
            );
            text["data: ".len()..text.len() - 2].to_string()
        })
        .collect();
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["content"],
        "quote \" and 👋"
    );
    assert_eq!(chunks[1]["usage"], Value::Null);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"], json!([]));
    assert_eq!(chunks[3]["usage"]["prompt_tokens"], 0);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], context.id.as_str());
        assert_eq!(chunk["model"], "my-model");
    }
}

#[test]
fn uuids_are_version_4() {
    let id = uuid_v4();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
}

//! The simulator's audio transcriptions and translations: a multipart form in, and an answer
//! that says what the engine received (each field, and the file's name, type and size), as
//! JSON, text, SRT or VTT (`response_format`), or streamed (`stream=true`) as transcript
//! deltas ending with `[DONE]`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::{full, json_response, split, stream_response, SimBody, Step};

/// A form's fields (file parts described by name and size, not kept), read from `body`'s bytes.
fn fields(content_type: &str, body: &[u8]) -> BTreeMap<String, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_default()
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter has no line break before it.
    let mut starts = vec![0];
    starts.extend(memchr::memmem::find_iter(body, delimiter.as_bytes()).map(|at| at + 2));
    let mut fields = BTreeMap::new();
    for pair in starts.windows(2) {
        let part = &body[pair[0] + boundary.len() + 2..pair[1] - 2];
        let Some(split) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..split]);
        let value = &part[split + 4..];
        let attribute = |key: &str| {
            let at = head.find(&format!(" {key}=\""))? + key.len() + 3;
            Some(head[at..at + head[at..].find('"')?].to_string())
        };
        let Some(name) = attribute("name") else {
            continue;
        };
        let value = match attribute("filename") {
            Some(file) => format!("{file}, {} bytes", value.len()),
            None => String::from_utf8_lossy(value).into_owned(),
        };
        fields.insert(name, value);
    }
    fields
}

/// `POST audio/transcriptions` and `audio/translations`.
pub(super) fn transcribe(content_type: &str, body: &[u8], chunks: usize) -> Response<SimBody> {
    let fields = fields(content_type, body);
    if !fields.contains_key("file") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "file: Field required", "type": "invalid_request_error", "param": "file", "code": "400"}}),
        );
    }
    let said: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!("Received {}.", said.join("; "));
    let format = fields.get("response_format").map_or("json", String::as_str);
    if fields.get("stream").map(String::as_str) == Some("true") {
        let mut plan: Vec<Step> = split(&text, chunks)
            .into_iter()
            .map(|delta| {
                let event = json!({"type": "transcript.text.delta", "delta": delta});
                Step::Send(Bytes::from(format!("data: {event}\n\n")))
            })
            .collect();
        let done = json!({"type": "transcript.text.done", "text": text});
        plan.push(Step::Send(Bytes::from(format!("data: {done}\n\n"))));
        plan.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
        return stream_response(plan, std::time::Duration::ZERO);
    }
    let (body, kind) = match format {
        "text" => (text, "text/plain; charset=utf-8"),
        "srt" => (
            format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n"),
            "text/plain; charset=utf-8",
        ),
        "vtt" => (
            format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n"),
            "text/vtt; charset=utf-8",
        ),
        _ => {
            let usage = json!({"type": "duration", "seconds": 1});
            return json_response(StatusCode::OK, &json!({"text": text, "usage": usage}));
        }
    };
    let mut response = Response::new(full(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

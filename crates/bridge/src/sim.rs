//! A simulated OpenAI-compatible engine. **A test tool**, not a model.
//!
//! It backs the built-in demo model and is what the tests and benchmarks proxy to: chat
//! completions, completions, embeddings, models and health, streaming with a configurable chunk
//! count and gap. A request may carry a `simulate` object (which Bridge forwards like any other
//! field) to make the engine misbehave on purpose — answer an error status, break a stream, send
//! an in-band error, stall — so failure handling can be tested through the real SDK.

mod apis;
mod audio;
pub mod predict;
mod responses;
mod responses_api;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::BoxError;
use crate::server;
use responses::{embeddings, engine_error, stream_plan, Answer};

/// How the simulated engine answers by default.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The model name it reports and answers as (its "served model name").
    pub model: String,
    /// Content chunks per streamed answer.
    pub chunks: usize,
    /// Gap between streamed chunks.
    pub gap: Duration,
    /// When set, requests must carry `Authorization: Bearer <key>` (as vLLM's `--api-key`).
    pub api_key: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model: "bridge-sim".into(),
            chunks: 8,
            gap: Duration::ZERO,
            api_key: None,
        }
    }
}

/// Default reply text, naming the engine (its served model) so tests can tell which
/// deployment answered; it is split into the streamed pieces.
fn default_reply(model: &str) -> String {
    format!("Hello from Bridge's simulated engine {model}. This answer went through Bridge. 👋")
}

type SimBody = BoxBody<Bytes, BoxError>;

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn run(listener: TcpListener, config: SimConfig, shutdown: impl Future<Output = ()>) {
    let engine = Arc::new(Engine {
        config,
        store: responses_api::Store::default(),
    });
    server::serve(
        listener,
        shutdown,
        server::DEFAULT_DRAIN_TIMEOUT,
        move |req| handle(engine.clone(), req),
    )
    .await;
}

/// One simulated engine: how it answers, and what it stored.
#[derive(Debug)]
struct Engine {
    config: SimConfig,
    store: responses_api::Store,
}

async fn handle(
    engine: Arc<Engine>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let config = &engine.config;
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    if let Some(key) = &config.api_key {
        let expected = format!("Bearer {key}");
        if path != "/health"
            && req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                != Some(expected.as_bytes())
        {
            return Ok(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "Unauthorized"}),
            ));
        }
    }
    let response = match (method, path.as_str()) {
        (Method::GET, "/health") => Response::new(full(Bytes::new())),
        (Method::GET, p) if p.ends_with("/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": config.model, "object": "model", "created": now(), "owned_by": "bridge-sim"}]}),
        ),
        (Method::POST, p) if p == "/predict" || p.starts_with("/predict/") => {
            let shape = p
                .trim_start_matches("/predict")
                .trim_start_matches('/')
                .to_string();
            match read_json(req).await {
                Ok((body, _)) => predict::answer(&shape, &body, config.gap),
                Err(r) => r,
            }
        }
        (Method::POST, p)
            if p.ends_with("/v1/audio/transcriptions") || p.ends_with("/v1/audio/translations") =>
        {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            audio::transcribe(&content_type, &body, config.chunks)
        }
        (method, p) if p.contains("/v1/responses/") => {
            let rest = p.split("/v1/responses/").nth(1).unwrap_or_default();
            responses_api::stored_route(&engine.store, &method, rest)
        }
        (Method::POST, p) if other_api(p).is_some() => match read_json(req).await {
            Ok((body, _)) => {
                if let Some(ms) = body["simulate"]["delay_ms"].as_u64() {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                match other_api(p).unwrap_or_default() {
                    "responses" => responses_api::responses(config, &engine.store, &body).await,
                    "messages" => apis::messages(config, &body).await,
                    "count_tokens" => apis::count_tokens(&body),
                    "rerank" => apis::rerank(config, &body),
                    "score" => apis::score(config, &body),
                    "tokenize" => apis::tokenize(&body),
                    "detokenize" => apis::detokenize(&body),
                    "classify" => apis::pooling(config, &body, true),
                    _ => apis::pooling(config, &body, false),
                }
            }
            Err(r) => r,
        },
        (Method::POST, p) if p.ends_with("/chat/completions") => {
            generate(config, req, Kind::Chat).await
        }
        (Method::POST, p) if p.ends_with("/completions") => {
            generate(config, req, Kind::Completion).await
        }
        (Method::POST, p) if p.ends_with("/embeddings") => match read_json(req).await {
            Ok((body, _)) => json_response(StatusCode::OK, &embeddings(&body, &config.model)),
            Err(r) => r,
        },
        _ => json_response(
            StatusCode::NOT_FOUND,
            &engine_error(404, "Not Found", false),
        ),
    };
    Ok(response)
}

/// Which of the simulator's other APIs a path is, if any (the root routes only at the root,
/// as vLLM and llama-server serve them).
fn other_api(path: &str) -> Option<&'static str> {
    match path {
        "/tokenize" => Some("tokenize"),
        "/detokenize" => Some("detokenize"),
        "/pooling" => Some("pooling"),
        "/classify" => Some("classify"),
        p if p.ends_with("/v1/responses") => Some("responses"),
        p if p.ends_with("/v1/messages/count_tokens") => Some("count_tokens"),
        p if p.ends_with("/v1/messages") => Some("messages"),
        p if p.ends_with("/v1/rerank") => Some("rerank"),
        p if p.ends_with("/v1/score") => Some("score"),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// Reads the body as JSON; also returns the headers, for `simulate.echo`.
async fn read_json(req: Request<Incoming>) -> Result<(Value, Value), Response<SimBody>> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    serde_json::from_slice(&bytes)
        .map(|v| (v, Value::Object(headers)))
        .map_err(|e| {
            json_response(
                StatusCode::BAD_REQUEST,
                &engine_error(400, &format!("invalid JSON: {e}"), false),
            )
        })
}

async fn generate(config: &SimConfig, req: Request<Incoming>, kind: Kind) -> Response<SimBody> {
    let (body, headers) = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sim = &body["simulate"];
    if let Some(ms) = sim["delay_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = sim["status"].as_u64() {
        let status =
            StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = sim["message"].as_str().unwrap_or("simulated engine error");
        let error = engine_error(status.as_u16(), message, sim["flat_error"] == true);
        return json_response(status, &error);
    }
    let reply = if sim["echo"] == true {
        json!({"body": body, "headers": headers}).to_string()
    } else {
        sim["reply"]
            .as_str()
            .map_or_else(|| default_reply(&config.model), str::to_string)
    };
    let chunks = sim["chunks"].as_u64().map_or(config.chunks, |c| c as usize);
    let prompt_text = if kind == Kind::Chat {
        body["messages"].to_string()
    } else {
        body["prompt"].to_string()
    };
    let answer = Answer {
        id: format!(
            "{}-{:016x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            fastrand::u64(..)
        ),
        created: now(),
        model: body["model"].as_str().unwrap_or(&config.model).to_string(),
        pieces: split(&reply, chunks),
        prompt_tokens: prompt_text.split_whitespace().count() as u64,
    };
    if body["stream"] != true {
        let object = if kind == Kind::Chat {
            answer.chat_completion()
        } else {
            answer.text_completion()
        };
        return json_response(StatusCode::OK, &object);
    }
    let gap = sim["gap_ms"]
        .as_u64()
        .map_or(config.gap, Duration::from_millis);
    let include_usage = body["stream_options"]["include_usage"] == true;
    let plan = stream_plan(&answer, kind, include_usage, sim);
    stream_response(plan, gap)
}

/// A stream that sends `plan`, `gap` apart.
fn stream_response(plan: Vec<Step>, gap: Duration) -> Response<SimBody> {
    let stream = futures_util::stream::unfold(
        (plan.into_iter(), true),
        move |(mut it, first)| async move {
            let step = it.next()?;
            if !first && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let frame = match step {
                Step::Send(bytes) => Ok(Frame::data(bytes)),
                Step::Abort => Err(BoxError::from("simulated engine crash")),
            };
            Some((frame, (it, false)))
        },
    );
    let mut response = Response::new(BoxBody::new(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

enum Step {
    Send(Bytes),
    Abort,
}

/// Splits `text` into `n` pieces of nearly equal character counts (fewer if it is shorter).
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    (0..n)
        .map(|i| {
            chars[i * chars.len() / n..(i + 1) * chars.len() / n]
                .iter()
                .collect()
        })
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn full(bytes: Bytes) -> SimBody {
    BoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_character() {
        for (text, n) in [("héllo 😀 wörld", 4), ("ab", 8), ("", 3), ("abc", 1)] {
            let pieces = split(text, n);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.len() <= n.max(1));
        }
    }
}

//! Admit: a request of a limited key, or to a limited model, is counted against their limits
//! before it is sent, and refused with OpenAI's 429 when it does not fit.
//!
//! Tokens are reserved before the fact: an estimate of the prompt (the body's bytes over four,
//! the usual rule of thumb for English text and JSON; a form's audio counts nothing) plus the
//! client's `max_tokens` (or `max_completion_tokens`, `max_output_tokens`) when set. The
//! reservation is settled with the engine's usage when the answer ends (see
//! [`crate::fleet::Admission::settle`]), so a long stream is never cut off midway: a request
//! that cannot fit is refused up front.

use std::ops::Range;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::keys::Caller;
use crate::config::registry::{Deployment, Registry};
use crate::error::ApiError;
use crate::fleet::bucket::Wait;
use crate::fleet::scope::Kind;
use crate::fleet::{Admission, Fleet, Limited, Rates};
use crate::stage::route::RoutedBody;

/// Admits the request to `deployment` for `caller` (`None`: no limit applies), or refuses it.
pub async fn admit(
    fleet: &Fleet,
    registry: &Registry,
    caller: Caller<'_>,
    deployment: &Deployment,
    routed: &RoutedBody,
    body: &[u8],
) -> Result<Option<Admission>, ApiError> {
    let model = registry.models.get(&deployment.model_id);
    let key_quota = caller.key().map(|k| k.quota).unwrap_or_default();
    let model_quota = model.map(|m| m.quota).unwrap_or_default();
    let mut limited: Vec<Limited> = Vec::with_capacity(2);
    if !key_quota.is_none() {
        limited.push((fleet.key_scope(caller.name()), key_quota));
    }
    if !model_quota.is_none() {
        limited.push((fleet.model_scope(&deployment.model_id), model_quota));
    }
    if limited.is_empty() {
        return Ok(None);
    }
    let tokens = if key_quota.counts_tokens() || model_quota.counts_tokens() {
        estimate(routed, body)
    } else {
        0
    };
    match fleet.admit(limited, tokens).await {
        Ok(admission) => Ok(Some(admission)),
        Err((at, refused, rates)) => {
            let key_first = !key_quota.is_none();
            let scope = if at == 0 && key_first {
                format!("key '{}'", caller.name())
            } else {
                format!("model '{}'", deployment.model_id)
            };
            let model_id = deployment.model_id.as_str();
            fleet.count_limited(caller.name(), model_id, refused.kind.label());
            let mut error = refusal(&scope, refused.kind, refused.limit, tokens, refused.wait);
            let mut headers = HeaderMap::new();
            insert_rates(&mut headers, &rates);
            error.headers = Some(Box::new(headers));
            Err(error)
        }
    }
}

/// The request's token estimate: its prompt, and the output cap the client set.
fn estimate(routed: &RoutedBody, body: &[u8]) -> u64 {
    let prompt = if routed.is_form() {
        0
    } else {
        body.len() as u64 / 4
    };
    // A client's absurd max_tokens stays a number the accounting can hold (and is refused as
    // larger than any limit).
    prompt
        .saturating_add(routed.max_tokens(body).unwrap_or(0))
        .min(MAX_ESTIMATE)
}

/// The largest token estimate counted: far above any limit, far below overflow.
const MAX_ESTIMATE: u64 = 1 << 50;

/// The 429, worded as OpenAI words it.
fn refusal(scope: &str, kind: Kind, limit: u64, tokens: u64, wait: Wait) -> ApiError {
    let what = match kind {
        Kind::Rpm => "requests per min (RPM)",
        Kind::Tpm => "tokens per min (TPM)",
        Kind::Tpd => "tokens per day (TPD)",
        Kind::Concurrent => "requests in flight (max_concurrent)",
    };
    match wait {
        Wait::For(wait) => ApiError::rate_limited(
            kind.is_tokens(),
            format!(
                "Rate limit reached for {scope} on {what}: Limit {limit}. Please try again in {}.",
                duration_text(wait)
            ),
            Some(wait.as_secs_f64().ceil().max(1.0) as u32),
        ),
        Wait::Never => ApiError::rate_limited(
            true,
            format!(
                "Request too large for {scope} on {what}: Limit {limit}, Requested {tokens} (the prompt's estimate plus max_tokens). Send a shorter prompt or a lower max_tokens."
            ),
            None,
        ),
    }
}

/// `x-ratelimit-*` as OpenAI sends them. They go on every answer to a limited key, so their
/// six values are written into one buffer and shared as slices of it (one allocation, not
/// six formatted strings).
pub fn insert_rates(headers: &mut HeaderMap, rates: &Rates) {
    const NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    let mut text = BytesMut::with_capacity(96);
    let mut spans = [[0..0, 0..0, 0..0], [0..0, 0..0, 0..0]];
    for (spans, standing) in spans.iter_mut().zip([rates.requests, rates.tokens]) {
        let Some((limit, left, reset)) = standing else {
            continue;
        };
        spans[0] = written(&mut text, |t| push_number(t, limit));
        spans[1] = written(&mut text, |t| push_number(t, left));
        spans[2] = written(&mut text, |t| push_duration(t, reset));
    }
    let text = text.freeze();
    headers.reserve(6);
    for (names, spans) in NAMES.iter().zip(spans) {
        for (name, span) in names.iter().zip(spans) {
            if span.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(span)) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

/// What `write` appends to `text`, as a range of it.
fn written(text: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) -> Range<usize> {
    let start = text.len();
    write(text);
    start..text.len()
}

fn push_number(text: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend_from_slice(&digits[at..]);
}

/// A duration as OpenAI's headers write it: `20ms`, `1s`, `6m0s`, `23h59m59s` (whole seconds,
/// rounded up, from one second on).
fn push_duration(text: &mut BytesMut, d: Duration) {
    if d < Duration::from_secs(1) {
        push_number(text, d.as_millis() as u64);
        text.extend_from_slice(b"ms");
        return;
    }
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        push_number(text, h);
        text.extend_from_slice(b"h");
    }
    if h > 0 || m > 0 {
        push_number(text, m);
        text.extend_from_slice(b"m");
    }
    push_number(text, s);
    text.extend_from_slice(b"s");
}

/// [`push_duration`] as a string, for messages.
pub fn duration_text(d: Duration) -> String {
    let mut text = BytesMut::with_capacity(16);
    push_duration(&mut text, d);
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_max_tokens_is_a_large_estimate_not_an_overflow() {
        let body = br#"{"model":"baseten/m","max_tokens":18446744073709551615}"#;
        let routed = crate::stage::route::route(body, &HeaderMap::new()).unwrap();
        assert_eq!(estimate(&routed, body), MAX_ESTIMATE);
    }

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(duration_text(Duration::from_millis(20)), "20ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "2s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(duration_text(Duration::from_secs(86_399)), "23h59m59s");
        assert_eq!(duration_text(Duration::from_secs(3600)), "1h0m0s");
        let mut headers = HeaderMap::new();
        let rates = Rates {
            requests: Some((600, 599, Duration::from_millis(100))),
            tokens: Some((200_000, 0, Duration::from_secs(60))),
        };
        insert_rates(&mut headers, &rates);
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-ratelimit-limit-requests"), "600");
        assert_eq!(get("x-ratelimit-remaining-requests"), "599");
        assert_eq!(get("x-ratelimit-reset-requests"), "100ms");
        assert_eq!(get("x-ratelimit-limit-tokens"), "200000");
        assert_eq!(get("x-ratelimit-remaining-tokens"), "0");
        assert_eq!(get("x-ratelimit-reset-tokens"), "1m0s");
    }

    #[test]
    fn a_refusal_names_the_scope_and_the_limit_and_says_when() {
        let e = refusal(
            "key 'a'",
            Kind::Rpm,
            3,
            0,
            Wait::For(Duration::from_millis(19_500)),
        );
        assert_eq!((e.status.as_u16(), &*e.kind), (429, "requests"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert!(e
            .message
            .contains("key 'a' on requests per min (RPM): Limit 3"));
        assert_eq!((e.retry_after, e.should_retry), (Some(20), None));
        let e = refusal("model 'm'", Kind::Tpm, 100, 101, Wait::Never);
        assert_eq!((&*e.kind, e.should_retry), ("tokens", Some(false)));
        assert!(e.message.contains("Requested 101"));
    }
}

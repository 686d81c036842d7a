//! Route: where a request goes, read from its body.
//!
//! Routing sources, in order: `baseten.model_id` / `baseten.deployment_id` in the body (what
//! `extra_body` produces); else `model` of the form `baseten/{model_id}[/{deployment_id}]` for
//! clients that cannot add body fields. The body is scanned once by [`crate::json`]; the upstream
//! body is the original bytes minus the `baseten` member (and with `model` replaced in the
//! second form), assembled from slices of the original buffer without copying.

use bytes::Bytes;
use http::HeaderMap;

use super::prefix::PrefixMembers;
use crate::body::ReqBody;
use crate::error::{ApiError, ROUTING_HINT};
use crate::json::{scan_members, JsonError, Member};

mod sources;
use sources::{check_id, from_baseten, from_model_name};
pub use sources::{from_headers, DEPLOYMENT_ID_HEADER, MODEL_ID_HEADER};

/// The member added to streams when Bridge asks the engine for usage.
const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Prefix of the model-name routing form.
pub const MODEL_FORM_PREFIX: &str = "baseten/";

/// Where the client asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The model the client named.
    pub model_id: String,
    /// `None` (absent or JSON null) means the production deployment.
    pub deployment_id: Option<String>,
    /// Routed by `model = "baseten/..."` or by the URL: the engine needs its own model name
    /// in place of the client's.
    pub from_model_name: bool,
}

/// A scanned request body: the routing and what to cut or replace when forwarding.
#[derive(Debug)]
pub struct RoutedBody {
    /// Where the client asked to go.
    pub routing: Routing,
    baseten: Option<Member>,
    /// The last `model` member (the one Python's `json`, and so the engine, would use).
    model: Option<Member>,
    /// `"stream": true` was sent.
    stream: bool,
    /// A `stream_options` member was sent (its content is the client's business).
    stream_options: bool,
    /// The `previous_response_id` of a Responses API request: the conversation lives on the
    /// replica that made it.
    previous: Option<Member>,
    /// For a multipart form: the parts to cut out, and the `model` value to replace.
    form: Option<Box<FormEdits>>,
    /// The client's cap on output tokens (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`): part of the request's token estimate.
    max_tokens: Option<Member>,
    /// What prefix affinity keys on (`balance = "prefix"`).
    pub prefix: PrefixMembers,
}

/// What forwarding changes in a multipart form: whole parts cut out (the routing fields), and
/// the bytes of the `model` part's value.
#[derive(Debug, Default)]
pub struct FormEdits {
    /// Byte ranges of whole parts, delimiter line included.
    pub cuts: Vec<std::ops::Range<usize>>,
    /// The `model` part's value.
    pub model: Option<std::ops::Range<usize>>,
}

/// Scans `body` and extracts the routing. Every client mistake is a 400 naming the field.
pub fn route(body: &[u8], headers: &HeaderMap) -> Result<RoutedBody, ApiError> {
    let mut previous = None;
    let mut max_tokens = None;
    let mut baseten = None;
    let mut model = None;
    let (mut stream, mut stream_options) = (false, false);
    let mut prefix = PrefixMembers::default();
    let scanned = scan_members(body, |m| {
        let key = m.key(body);
        match key.as_ref() {
            b"baseten" => {
                if baseten.is_some() {
                    return Err(JsonError::Refused("duplicate baseten"));
                }
                baseten = Some(m);
            }
            b"model" => model = Some(m),
            b"stream" => stream = &body[m.value.clone()] == b"true",
            b"stream_options" => stream_options = true,
            b"previous_response_id" => previous = Some(m),
            b"max_tokens" | b"max_completion_tokens" | b"max_output_tokens" => max_tokens = Some(m),
            other => {
                prefix.note(other, &m);
            }
        }
        Ok(())
    });
    match scanned {
        Err(JsonError::Refused(_)) => {
            return Err(
                ApiError::bad_request("the body has more than one 'baseten' key")
                    .with_param("baseten"),
            )
        }
        other => other?,
    }
    let routing = match baseten {
        Some(ref m) => from_baseten(&body[m.value.clone()])?,
        None => model
            .as_ref()
            .and_then(|m| from_model_name(&body[m.value.clone()]))
            .or_else(|| from_headers(headers))
            .transpose()?
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no routing information in the request: {ROUTING_HINT}"
                ))
                .with_param("baseten")
                .with_code("missing_routing")
            })?,
    };
    Ok(RoutedBody {
        routing,
        baseten,
        model,
        stream,
        stream_options,
        previous,
        form: None,
        max_tokens,
        prefix,
    })
}

/// Scans `body` for a request whose URL names the model (`/{model_id}/v1/...`): the model's
/// production deployment serves, any `baseten` member is still cut out, and `model` is replaced
/// by the engine's own name (the previous bridge's clients send free-form names).
pub fn route_by_path(body: &[u8], model_id: &str) -> Result<RoutedBody, ApiError> {
    let mut baseten = None;
    let mut model = None;
    let mut max_tokens = None;
    let (mut stream, mut stream_options) = (false, false);
    let mut prefix = PrefixMembers::default();
    scan_members(body, |m| {
        let key = m.key(body);
        match key.as_ref() {
            b"baseten" => baseten = Some(m),
            b"model" => model = Some(m),
            b"stream" => stream = &body[m.value.clone()] == b"true",
            b"stream_options" => stream_options = true,
            b"max_tokens" | b"max_completion_tokens" | b"max_output_tokens" => max_tokens = Some(m),
            other => {
                prefix.note(other, &m);
            }
        }
        Ok(())
    })?;
    check_id("model", model_id).map_err(|_| ApiError::model_not_found(model_id))?;
    Ok(RoutedBody {
        routing: Routing {
            model_id: model_id.to_string(),
            deployment_id: None,
            from_model_name: true,
        },
        baseten,
        model,
        stream,
        stream_options,
        previous: None,
        form: None,
        max_tokens,
        prefix,
    })
}

impl RoutedBody {
    /// Whether the engine should be asked for a usage chunk the client did not ask for: a
    /// stream, and no `stream_options` of the client's own.
    pub fn wants_usage_injected(&self) -> bool {
        self.stream && !self.stream_options
    }

    /// A body forwarded as it is, routed by `routing` (a stored response's routes, whose
    /// routing comes from the response id).
    pub fn untouched(routing: Routing) -> Self {
        RoutedBody {
            routing,
            baseten: None,
            model: None,
            stream: false,
            stream_options: false,
            previous: None,
            form: None,
            max_tokens: None,
            prefix: PrefixMembers::default(),
        }
    }

    /// A multipart form routed by `routing`, forwarded with `edits` made.
    pub fn form(routing: Routing, stream: bool, edits: FormEdits) -> Self {
        RoutedBody {
            stream,
            form: Some(Box::new(edits)),
            ..Self::untouched(routing)
        }
    }

    /// The `previous_response_id` the body names, when it is a string.
    pub fn previous_response_id(&self, body: &[u8]) -> Option<String> {
        let member = self.previous.as_ref()?;
        serde_json::from_slice(&body[member.value.clone()]).ok()
    }

    /// The body's `model`, when it is a string (for traces).
    pub fn model(&self, body: &[u8]) -> Option<String> {
        let member = self.model.as_ref()?;
        serde_json::from_slice(body.get(member.value.clone())?).ok()
    }

    /// The client's cap on output tokens, when it set one as a number.
    pub fn max_tokens(&self, body: &[u8]) -> Option<u64> {
        let member = self.max_tokens.as_ref()?;
        std::str::from_utf8(&body[member.value.clone()])
            .ok()?
            .parse()
            .ok()
    }

    /// Whether the body is a multipart form (its size says nothing of tokens).
    pub fn is_form(&self) -> bool {
        self.form.is_some()
    }

    /// The client sent `"stream": true`.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The body to send upstream: `body` without `baseten`, with `model` set to `new_model`
    /// when given, and with `stream_options.include_usage` added when `inject_usage`. Slices
    /// share `body`'s buffer; only the new model name and the added member are fresh.
    pub fn upstream_body(
        &self,
        body: &Bytes,
        new_model: Option<&str>,
        inject_usage: bool,
    ) -> ReqBody {
        let mut edits: Vec<(std::ops::Range<usize>, Option<Bytes>)> = Vec::with_capacity(3);
        if inject_usage {
            // Right after the opening brace; the body keeps at least `stream` after it.
            if let Some(open) = body.iter().position(|&b| b == b'{') {
                edits.push((open + 1..open + 1, Some(Bytes::from_static(INCLUDE_USAGE))));
            }
        }
        if let Some(m) = &self.baseten {
            edits.push((m.removal_range(), None));
        }
        if let (Some(name), Some(m)) = (new_model, &self.model) {
            let encoded = serde_json::to_vec(name).unwrap_or_default();
            edits.push((m.value.clone(), Some(Bytes::from(encoded))));
        }
        if let Some(form) = &self.form {
            edits.extend(form.cuts.iter().map(|cut| (cut.clone(), None)));
            if let (Some(name), Some(value)) = (new_model, &form.model) {
                edits.push((value.clone(), Some(Bytes::copy_from_slice(name.as_bytes()))));
            }
        }
        if edits.is_empty() {
            return ReqBody::new([body.clone()]);
        }
        edits.sort_by_key(|(range, _)| range.start);
        let mut parts = Vec::with_capacity(2 * edits.len() + 1);
        let mut at = 0;
        for (range, replacement) in edits {
            parts.push(body.slice(at..range.start));
            parts.extend(replacement);
            at = range.end;
        }
        parts.push(body.slice(at..));
        ReqBody::new(parts)
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;

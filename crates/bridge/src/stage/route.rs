//! Route: where a request goes, read from its body.
//!
//! Routing sources, in order: `baseten.model_id` / `baseten.deployment_id` in the body (what
//! `extra_body` produces); else `model` of the form `baseten/{model_id}[/{deployment_id}]` for
//! clients that cannot add body fields. The body is scanned once by [`crate::json`]; the upstream
//! body is the original bytes minus the `baseten` member (and with `model` replaced in the
//! second form), assembled from slices of the original buffer without copying.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::body::ReqBody;
use crate::config::registry::MAX_ID_LEN;
use crate::error::{ApiError, ROUTING_HINT};
use crate::json::{scan_members, type_name, JsonError, Member};

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
    let scanned = scan_members(body, |m| {
        match m.key(body).as_ref() {
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
            _ => {}
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
    scan_members(body, |m| {
        match m.key(body).as_ref() {
            b"baseten" => baseten = Some(m),
            b"model" => model = Some(m),
            b"stream" => stream = &body[m.value.clone()] == b"true",
            b"stream_options" => stream_options = true,
            b"max_tokens" | b"max_completion_tokens" | b"max_output_tokens" => max_tokens = Some(m),
            _ => {}
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
    })
}

fn wrong(param: &'static str, message: String) -> ApiError {
    ApiError::bad_request(format!("{message}; {ROUTING_HINT}")).with_param(param)
}

fn check_id(param: &'static str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(wrong(
            param,
            format!("{param} must be 1 to {MAX_ID_LEN} characters long"),
        ));
    }
    Ok(())
}

/// The usual, valid `baseten` object, read without building a JSON tree.
#[derive(serde::Deserialize)]
struct Baseten<'a> {
    #[serde(borrow)]
    model_id: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    deployment_id: Option<std::borrow::Cow<'a, str>>,
}

fn from_baseten(raw: &[u8]) -> Result<Routing, ApiError> {
    // Fast path: well-formed routing. Anything else goes the slow way, which names the mistake.
    // Only for an object: serde would also take `["m"]` as a struct written as a sequence.
    let object = raw.trim_ascii_start().starts_with(b"{");
    if let Some(fast) = object
        .then(|| serde_json::from_slice::<Baseten<'_>>(raw).ok())
        .flatten()
    {
        let valid = |id: &str| !id.is_empty() && id.len() <= MAX_ID_LEN;
        if valid(&fast.model_id) && fast.deployment_id.as_deref().is_none_or(valid) {
            return Ok(Routing {
                model_id: fast.model_id.into_owned(),
                deployment_id: fast.deployment_id.map(|d| d.into_owned()),
                from_model_name: false,
            });
        }
    }
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::from(JsonError::Syntax {
            what: if e.is_syntax() {
                "invalid baseten value"
            } else {
                "baseten value too deep"
            },
            at: 0,
        })
    })?;
    let Value::Object(map) = value else {
        return Err(wrong(
            "baseten",
            format!("'baseten' must be an object, not {}", type_name(&value)),
        ));
    };
    let model_id = match map.get("model_id") {
        Some(Value::String(s)) => s.clone(),
        None => {
            return Err(wrong(
                "baseten.model_id",
                "'baseten.model_id' is missing".into(),
            ))
        }
        Some(other) => {
            return Err(wrong(
                "baseten.model_id",
                format!(
                    "'baseten.model_id' must be a string, not {}",
                    type_name(other)
                ),
            ))
        }
    };
    check_id("baseten.model_id", &model_id)?;
    let deployment_id = match map.get("deployment_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_id("baseten.deployment_id", s)?;
            Some(s.clone())
        }
        Some(other) => {
            return Err(wrong(
                "baseten.deployment_id",
                format!(
                    "'baseten.deployment_id' must be a string or null, not {}",
                    type_name(other)
                ),
            ))
        }
    };
    Ok(Routing {
        model_id,
        deployment_id,
        from_model_name: false,
    })
}

/// Header names that route a request whose body cannot carry `baseten` (or that has no body).
pub const MODEL_ID_HEADER: &str = "x-baseten-model-id";
/// See [`MODEL_ID_HEADER`].
pub const DEPLOYMENT_ID_HEADER: &str = "x-baseten-deployment-id";

/// `Some` when the request names its model in the [`MODEL_ID_HEADER`] header.
pub fn from_headers(headers: &HeaderMap) -> Option<Result<Routing, ApiError>> {
    let model = headers.get(MODEL_ID_HEADER)?;
    let text = |value: &http::HeaderValue, param: &'static str| {
        value
            .to_str()
            .map(str::to_string)
            .map_err(|_| wrong(param, format!("the {param} header is not visible ASCII")))
    };
    let routed = (|| {
        let model_id = text(model, MODEL_ID_HEADER)?;
        check_id(MODEL_ID_HEADER, &model_id)?;
        let deployment_id = match headers.get(DEPLOYMENT_ID_HEADER) {
            Some(value) => {
                let id = text(value, DEPLOYMENT_ID_HEADER)?;
                check_id(DEPLOYMENT_ID_HEADER, &id)?;
                Some(id)
            }
            None => None,
        };
        Ok(Routing {
            model_id,
            deployment_id,
            from_model_name: false,
        })
    })();
    Some(routed)
}
/// `Some` when `model` is a string starting with `baseten/`.
fn from_model_name(raw: &[u8]) -> Option<Result<Routing, ApiError>> {
    if !raw.starts_with(b"\"baseten/") {
        return None;
    }
    let name: String = serde_json::from_slice(raw).ok()?;
    let rest = name.strip_prefix(MODEL_FORM_PREFIX)?;
    let (model_id, deployment_id) = match rest.split_once('/') {
        Some((m, d)) => (m, Some(d)),
        None => (rest, None),
    };
    let checked = check_id("model", model_id)
        .and_then(|()| deployment_id.map_or(Ok(()), |d| check_id("model", d)))
        .map(|()| Routing {
            model_id: model_id.to_string(),
            deployment_id: deployment_id.map(str::to_string),
            from_model_name: true,
        });
    Some(checked)
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

//! The routing sources: the `baseten` object, the `baseten/...` model name, and the routing
//! headers, each read into a [`Routing`] or a 400 naming the field.

use http::HeaderMap;
use serde_json::Value;

use super::{Routing, MODEL_FORM_PREFIX};
use crate::config::registry::MAX_ID_LEN;
use crate::error::{ApiError, ROUTING_HINT};
use crate::json::{type_name, JsonError};

fn wrong(param: &'static str, message: String) -> ApiError {
    ApiError::bad_request(format!("{message}; {ROUTING_HINT}")).with_param(param)
}

pub(super) fn check_id(param: &'static str, id: &str) -> Result<(), ApiError> {
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

pub(super) fn from_baseten(raw: &[u8]) -> Result<Routing, ApiError> {
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
pub(super) fn from_model_name(raw: &[u8]) -> Option<Result<Routing, ApiError>> {
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

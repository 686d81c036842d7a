//! Route a multipart form (audio transcriptions and translations): where it goes, read from
//! its fields, and every other part forwarded byte for byte.
//!
//! The OpenAI SDKs send `extra_body={"baseten": {...}}` of a multipart request as the form
//! fields `baseten[model_id]` and `baseten[deployment_id]`; a `model` field may also take the
//! `baseten/{model_id}[/{deployment_id}]` form, and the routing headers work as for JSON. The
//! routing fields are cut out whole; the audio file and every other part reach the engine
//! unchanged, as slices of the client's buffer.

use std::ops::Range;

use http::{header, HeaderMap};

use super::route::{from_headers, FormEdits, RoutedBody, Routing, MODEL_FORM_PREFIX};
use crate::config::registry::MAX_ID_LEN;
use crate::error::{ApiError, ROUTING_HINT};

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let (essence, params) = value.split_once(';')?;
    if !essence.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// One part of a form: its field name, its value's bytes, and its whole extent.
struct Part {
    name: String,
    value: Range<usize>,
    whole: Range<usize>,
}

/// The parts of `body`, split at `boundary` (a form that does not parse is a 400).
fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!("the multipart form is malformed: {why}"))
            .with_code("invalid_multipart")
    };
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let mut starts: Vec<usize> = finder.find_iter(body).collect();
    // A delimiter starts the body or a line; anything else is content that looks like one.
    starts.retain(|&at| at == 0 || body[..at].ends_with(b"\r\n"));
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let (start, next) = (pair[0], pair[1]);
        // The part's own bytes end before the CRLF that precedes the next delimiter.
        let end = next
            .checked_sub(2)
            .filter(|&e| e >= start)
            .ok_or_else(|| bad("empty part"))?;
        let head_from = start + delimiter.len();
        let head_end = memchr::memmem::find(&body[head_from..end], b"\r\n\r\n")
            .ok_or_else(|| bad("a part without headers"))?
            + head_from;
        let head = std::str::from_utf8(&body[head_from..head_end])
            .map_err(|_| bad("headers not UTF-8"))?;
        let name = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .find_map(|l| {
                // ` name="` or `;name="`: never the tail of `filename="`.
                let at = l.find(" name=\"").or_else(|| l.find(";name=\""))?;
                let rest = &l[at + 7..];
                Some(rest[..rest.find('"')?].to_string())
            })
            .ok_or_else(|| bad("a part without a name"))?;
        // A part is cut from its delimiter to the next one: cuts of neighbouring parts meet
        // without overlapping, and the form stays well formed.
        let whole = start..next;
        parts.push(Part {
            name,
            value: head_end + 4..end,
            whole,
        });
    }
    if parts.is_empty() {
        return Err(bad("no parts, or no closing delimiter"));
    }
    Ok(parts)
}

/// Scans a form and extracts the routing (fields, else the `model` field's `baseten/...`
/// form, else the headers). Every client mistake is a 400 naming the field.
pub fn route_form(body: &[u8], headers: &HeaderMap) -> Result<RoutedBody, ApiError> {
    let Some(boundary) = boundary(headers) else {
        return Err(ApiError::unsupported_media_type_for(
            "multipart/form-data with a boundary",
            headers,
        ));
    };
    let parts = parts(body, boundary)?;
    let text = |part: &Part, field: &'static str| -> Result<String, ApiError> {
        let value = &body[part.value.clone()];
        if value.is_empty() || value.len() > MAX_ID_LEN {
            return Err(ApiError::bad_request(format!(
                "form field '{field}' must be 1 to {MAX_ID_LEN} bytes; {ROUTING_HINT}"
            ))
            .with_param(field));
        }
        String::from_utf8(value.to_vec()).map_err(|_| {
            ApiError::bad_request(format!("form field '{field}' is not UTF-8")).with_param(field)
        })
    };
    let mut edits = FormEdits::default();
    let (mut model_id, mut deployment_id, mut model, mut stream) = (None, None, None, false);
    for part in &parts {
        match part.name.as_str() {
            "baseten[model_id]" => {
                model_id = Some(text(part, "baseten[model_id]")?);
                edits.cuts.push(part.whole.clone());
            }
            "baseten[deployment_id]" => {
                deployment_id = Some(text(part, "baseten[deployment_id]")?);
                edits.cuts.push(part.whole.clone());
            }
            "model" => model = Some(part),
            "stream" => stream = &body[part.value.clone()] == b"true",
            _ => {}
        }
    }
    if model_id.is_none() && deployment_id.is_some() {
        return Err(ApiError::bad_request(format!(
            "form field 'baseten[deployment_id]' needs 'baseten[model_id]'; {ROUTING_HINT}"
        ))
        .with_param("baseten[model_id]"));
    }
    let routing = match (model_id, model) {
        (Some(model_id), _) => Routing {
            model_id,
            deployment_id,
            from_model_name: false,
        },
        (None, Some(part)) if body[part.value.clone()].starts_with(MODEL_FORM_PREFIX.as_bytes()) => {
            let name = text(part, "model")?;
            let rest = name.trim_start_matches(MODEL_FORM_PREFIX);
            let (model_id, deployment_id) = match rest.split_once('/') {
                Some((m, d)) => (m.to_string(), Some(d.to_string())),
                None => (rest.to_string(), None),
            };
            edits.model = Some(part.value.clone());
            Routing {
                model_id,
                deployment_id,
                from_model_name: true,
            }
        }
        _ => match from_headers(headers) {
            Some(routing) => routing?,
            None => {
                return Err(ApiError::bad_request(format!(
                    "no routing information in the form: {ROUTING_HINT} (as form fields: baseten[model_id], baseten[deployment_id])"
                ))
                .with_param("baseten")
                .with_code("missing_routing"))
            }
        },
    };
    Ok(RoutedBody::form(routing, stream, edits))
}

//! Read: the client's body, whole, bounded in size and time.
//!
//! Routing needs the whole body (the routing field may be anywhere in it), and engines get it
//! with a `content-length`, so it is read before anything else; a body over the limit is refused
//! from its `content-length` alone, or as soon as a chunked body crosses it, and the rest is
//! never buffered.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::BoxError;
use crate::error::ApiError;

/// JSON bodies only (multipart forms only, when `form`); a missing content type is accepted
/// for JSON (many hand-written clients omit it).
pub fn check_content_type(headers: &HeaderMap, form: bool) -> Result<(), ApiError> {
    if form {
        return match super::form::boundary(headers) {
            Some(_) => Ok(()),
            None => Err(ApiError::unsupported_media_type_for(
                "multipart/form-data with a boundary",
                headers,
            )),
        };
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::unsupported_media_type_for(
        "application/json",
        headers,
    ))
}

/// Reads the whole body within `timeout`, refusing it as soon as it exceeds `limit`.
pub async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let read = Limited::new(body, limit_usize).collect();
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::body_read_timeout(timeout)),
        // One frame (a client's body of a declared length, `server::body`) is kept as it is.
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::payload_too_large(limit))
        }
        Ok(Err(e)) => Err(
            ApiError::bad_request(format!("could not read the request body: {e}"))
                .with_code("body_read_failed"),
        ),
    }
}

//! Authenticate: who is calling.
//!
//! A key comes as `Authorization: Bearer KEY` (what every OpenAI SDK sends) or `Api-Key KEY`;
//! it is looked up in constant time ([`Keys::find`]) and never logged or forwarded: the rest
//! of the request path only ever sees the key's name.

use http::{header, HeaderMap};

use crate::config::keys::{Caller, Keys};
use crate::error::ApiError;

/// Anthropic's SDKs send their key in this header.
const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// Checks the `Authorization` header against `keys`, or, when `x_api_key` (Anthropic's SDKs send
/// their key so), the `x-api-key` header.
pub fn authenticate<'k>(
    keys: &'k Keys,
    headers: &HeaderMap,
    x_api_key: bool,
) -> Result<Caller<'k>, ApiError> {
    if keys.is_empty() {
        return Ok(Caller::Anonymous);
    }
    // Looked up only where the API sends its key so: a header lookup by name costs.
    if let Some(key) = x_api_key.then(|| headers.get(X_API_KEY)).flatten() {
        if !headers.contains_key(header::AUTHORIZATION) {
            let key = key.to_str().map(str::trim).unwrap_or_default();
            return keys
                .find(key)
                .map(Caller::Key)
                .ok_or_else(|| ApiError::unauthorized("invalid API key"));
        }
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing API key: send it as 'Authorization: Bearer <key>' (the OpenAI SDKs do this with api_key=...)",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            let scheme_ok =
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("api-key");
            scheme_ok.then(|| key.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized(
                "malformed Authorization header: use 'Bearer <key>' or 'Api-Key <key>'",
            )
        })?;
    keys.find(presented)
        .map(Caller::Key)
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::ApiKey;
    use http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn both_schemes_and_allow_lists() {
        let keys = Keys::new(vec![
            ApiKey::new("a", "sk-a", Some(vec!["m1".into()])),
            ApiKey::new("b", "sk-b", None),
        ]);
        let a = authenticate(&keys, &headers("Bearer sk-a"), false).unwrap();
        assert_eq!(a.name(), "a");
        assert!(a.allows("m1") && !a.allows("m2"));
        let b = authenticate(&keys, &headers("Api-Key sk-b"), false).unwrap();
        assert!(b.name() == "b" && b.allows("anything"));
        for bad in [
            "Bearer sk-c",
            "Bearer",
            "Basic sk-a",
            "sk-a",
            "Bearer sk-a2",
        ] {
            let err = authenticate(&keys, &headers(bad), false).unwrap_err();
            assert_eq!(err.status, 401, "{bad}");
            assert!(!err.message.contains("sk-"), "key echoed: {}", err.message);
        }
        assert_eq!(
            authenticate(&keys, &HeaderMap::new(), false)
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn no_keys_means_anonymous() {
        let keys = Keys::default();
        let caller = authenticate(&keys, &HeaderMap::new(), false).unwrap();
        assert!(matches!(caller, Caller::Anonymous));
    }
}

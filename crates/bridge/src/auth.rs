//! Stage 1 of a request: who is calling.
//!
//! Keys are stored only as SHA-256 digests and a presented key is compared against every
//! configured digest in constant time, so neither the key's content nor its length, nor which
//! key matched, shows in the response time. The key itself is never logged or forwarded: the
//! rest of the request path only ever sees the key's `name`.

use std::collections::HashSet;

use http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// One configured client key.
#[derive(Debug)]
pub struct ApiKey {
    /// Label for logs and metrics.
    pub name: String,
    digest: [u8; 32],
    /// Allowed model ids; `None` allows every model.
    models: Option<HashSet<String>>,
    /// Index of its `key` label in metrics (0 is "no key").
    label: usize,
}

impl ApiKey {
    pub fn new(name: &str, secret: &str, models: Option<Vec<String>>) -> Self {
        ApiKey {
            name: name.to_string(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            models: models.map(|m| m.into_iter().collect()),
            label: 0,
        }
    }

    /// Whether this key may use `model_id`.
    pub fn allows(&self, model_id: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model_id))
    }
}

/// The configured keys. Empty means authentication is off.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<ApiKey>,
}

/// Who the caller is: a named key, or anyone when authentication is off.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Anonymous,
    Key(&'a ApiKey),
}

impl Caller<'_> {
    pub fn allows(&self, model_id: &str) -> bool {
        match self {
            Caller::Anonymous => true,
            Caller::Key(key) => key.allows(model_id),
        }
    }

    /// Index of the caller's `key` label in metrics: 0 without a key.
    pub fn label(&self) -> usize {
        match self {
            Caller::Anonymous => 0,
            Caller::Key(key) => key.label,
        }
    }

    /// Name for logs; never the key.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "-",
            Caller::Key(key) => &key.name,
        }
    }
}

impl Keys {
    pub fn new(mut keys: Vec<ApiKey>) -> Self {
        for (i, key) in keys.iter_mut().enumerate() {
            key.label = i + 1;
        }
        Keys { keys }
    }

    /// `key` label values for metrics: `-` (no key), then each key's name.
    pub fn labels(&self) -> Vec<String> {
        std::iter::once("-".to_string())
            .chain(self.keys.iter().map(|k| k.name.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the `Authorization` header (`Bearer KEY` or `Api-Key KEY`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller<'_>, ApiError> {
        if self.keys.is_empty() {
            return Ok(Caller::Anonymous);
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
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Visit every key whatever matches, so timing does not tell which one did.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
            .map(Caller::Key)
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let a = keys.authenticate(&headers("Bearer sk-a")).unwrap();
        assert_eq!(a.name(), "a");
        assert!(a.allows("m1") && !a.allows("m2"));
        let b = keys.authenticate(&headers("Api-Key sk-b")).unwrap();
        assert!(b.name() == "b" && b.allows("anything"));
        for bad in [
            "Bearer sk-c",
            "Bearer",
            "Basic sk-a",
            "sk-a",
            "Bearer sk-a2",
        ] {
            let err = keys.authenticate(&headers(bad)).unwrap_err();
            assert_eq!(err.status, 401, "{bad}");
            assert!(!err.message.contains("sk-"), "key echoed: {}", err.message);
        }
        assert_eq!(
            keys.authenticate(&HeaderMap::new()).unwrap_err().status,
            401
        );
    }

    #[test]
    fn no_keys_means_anonymous() {
        let keys = Keys::default();
        let caller = keys.authenticate(&HeaderMap::new()).unwrap();
        assert!(matches!(caller, Caller::Anonymous));
    }
}

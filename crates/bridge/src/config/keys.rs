//! The configured client keys, and who a caller is.
//!
//! Keys are stored only as SHA-256 digests and a presented key is compared against every
//! configured digest in constant time, so neither the key's content nor its length, nor which
//! key matched, shows in the response time. The key itself is never logged or forwarded: the
//! rest of the request path only ever sees the key's `name`.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::quota::Quota;

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
    /// Its limits.
    pub quota: Quota,
}

impl ApiKey {
    /// A key named `name` (for logs), kept only as the digest of `secret`.
    pub fn new(name: &str, secret: &str, models: Option<Vec<String>>) -> Self {
        ApiKey {
            name: name.to_string(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            models: models.map(|m| m.into_iter().collect()),
            label: 0,
            quota: Quota::default(),
        }
    }

    /// This key with `quota` as its limits.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
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
    /// Authentication is off.
    Anonymous,
    /// The caller presented this key.
    Key(&'a ApiKey),
}

impl Caller<'_> {
    /// Whether the caller may use `model_id`.
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

    /// Who owns what this caller makes (stored responses): the key's digest, which neither a
    /// reload nor a renaming changes; all zeros without a key.
    pub fn owner(&self) -> [u8; 32] {
        match self {
            Caller::Anonymous => [0; 32],
            Caller::Key(key) => key.digest,
        }
    }

    /// The key, when there is one.
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Anonymous => None,
            Caller::Key(key) => Some(key),
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
    /// The key table, each key given its metrics label in order (0 is "no key").
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

    /// Some key has limits.
    pub fn any_limited(&self) -> bool {
        self.keys.iter().any(|k| !k.quota.is_none())
    }

    /// No keys: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose digest matches `presented`. Every key is compared, whatever matches, so
    /// timing does not tell which one did (or whether any did).
    pub fn find(&self, presented: &str) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

/// Reads a secret from a literal, an environment variable or a file (exactly one of them).
pub fn secret(
    what: &str,
    literal: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<String>, String> {
    let value = match (literal, env, file) {
        (None, None, None) => return Ok(None),
        (Some(v), None, None) => v.to_string(),
        (None, Some(var), None) => std::env::var(var)
            .map_err(|_| format!("{what}: environment variable {var} is not set"))?,
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("{what}: cannot read {path}: {e}"))?
            .trim()
            .to_string(),
        _ => return Err(format!("{what}: give only one source for the key")),
    };
    if value.is_empty() {
        return Err(format!("{what}: the key is empty"));
    }
    Ok(Some(value))
}

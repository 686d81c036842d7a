//! Limits as configured: the four limits of a key or a model, and where a fleet keeps its
//! shared counters. Plain data; [`crate::fleet`] enforces them.

use std::time::Duration;

use super::file::{LimitsConfig, DEFAULT_REDIS_TIMEOUT_MS};

/// The limits of one key, or of one model for every key together. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Requests in flight.
    pub max_concurrent: Option<u64>,
}

impl Quota {
    /// The four limits, each checked to be at least 1 (`what` names the table for errors).
    pub fn new(
        what: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tpd: Option<u64>,
        max_concurrent: Option<u64>,
    ) -> Result<Self, String> {
        for (name, value) in [
            ("rpm", rpm),
            ("tpm", tpm),
            ("tpd", tpd),
            ("max_concurrent", max_concurrent),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{what}: {name} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        Ok(Quota {
            rpm,
            tpm,
            tpd,
            max_concurrent,
        })
    }

    /// No limit is set.
    pub fn is_none(&self) -> bool {
        *self == Quota::default()
    }

    /// A token limit is set: requests need a token estimate.
    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some() || self.tpd.is_some()
    }
}

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// The Redis URL; `None`: each instance counts alone.
    pub redis: Option<String>,
    /// Longest wait for Redis before the instance falls back to counting alone.
    pub redis_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            redis: None,
            redis_timeout: Duration::from_millis(DEFAULT_REDIS_TIMEOUT_MS),
        }
    }
}

impl LimitSettings {
    /// `[limits]` checked: one source for the URL, a `redis://` scheme, a timeout of at least 1 ms.
    pub fn new(config: Option<&LimitsConfig>) -> Result<Self, String> {
        let Some(config) = config else {
            return Ok(LimitSettings::default());
        };
        let redis = match (&config.redis, &config.redis_env) {
            (Some(_), Some(_)) => return Err("limits: give redis or redis_env, not both".into()),
            (Some(url), None) => Some(url.clone()),
            (None, Some(var)) => {
                Some(std::env::var(var).map_err(|_| {
                    format!("limits.redis_env: environment variable {var} is not set")
                })?)
            }
            (None, None) => None,
        };
        if let Some(url) = &redis {
            if !url.starts_with("redis://") {
                return Err(format!(
                    "limits.redis must be a redis:// URL, not '{}'",
                    url.split(':').next().unwrap_or_default()
                ));
            }
        }
        let timeout = config.redis_timeout_ms.unwrap_or(DEFAULT_REDIS_TIMEOUT_MS);
        if timeout == 0 {
            return Err("limits.redis_timeout_ms must be at least 1".into());
        }
        Ok(LimitSettings {
            redis,
            redis_timeout: Duration::from_millis(timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_and_bad_urls_are_refused() {
        assert!(Quota::new("key 'a'", Some(0), None, None, None)
            .unwrap_err()
            .contains("rpm must be at least 1"));
        let q = Quota::new("key 'a'", Some(5), None, Some(9), None).unwrap();
        assert!(q.counts_tokens() && !q.is_none());
        let bad = LimitsConfig {
            redis: Some("http://x".into()),
            ..Default::default()
        };
        assert!(LimitSettings::new(Some(&bad))
            .unwrap_err()
            .contains("redis:// URL"));
        let good = LimitsConfig {
            redis: Some("redis://127.0.0.1:1/0".into()),
            ..Default::default()
        };
        let s = LimitSettings::new(Some(&good)).unwrap();
        assert_eq!(s.redis_timeout, Duration::from_millis(5));
    }
}

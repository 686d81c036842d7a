//! `[tracing]`, validated: where spans go and how many requests make them.
//!
//! Kept apart from the routing table's other settings because it is read once, when Bridge
//! starts (the exporter lives for the process); a reload that changes it is told to restart.

use serde::Deserialize;

use super::defaults::DEFAULT_SERVICE_NAME;

/// `[tracing]`: spans exported over OTLP/HTTP. A restart applies a change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`); spans go to
    /// `/v1/traces` under it. Absent: no traces.
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced when the caller sent no sampled `traceparent` (0 to 1).
    /// Parent-based: a caller's sampled trace is always kept, its unsampled one never.
    /// Default 1.
    pub sample_ratio: Option<f64>,
    /// `service.name` of Bridge's spans. Default [`DEFAULT_SERVICE_NAME`].
    pub service_name: Option<String>,
}

/// `[tracing]` in force; `None` in the registry when no endpoint is set.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The collector's traces URL: the configured base with `/v1/traces`.
    pub traces_url: String,
    /// Share of root requests traced.
    pub sample_ratio: f64,
    /// `service.name`.
    pub service_name: String,
}

impl TraceSettings {
    /// `[tracing]` checked: an `http://` endpoint (Bridge exports without TLS; a collector
    /// sidecar or agent on the node is the usual hop), a ratio between 0 and 1, a name.
    pub fn new(config: Option<&TracingConfig>) -> Result<Option<Self>, String> {
        let Some(config) = config else {
            return Ok(None);
        };
        let ratio = config.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "tracing.sample_ratio must be between 0 and 1, not {ratio}"
            ));
        }
        let service_name = config
            .service_name
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        if service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        let Some(endpoint) = &config.otlp_endpoint else {
            if config.sample_ratio.is_some() || config.service_name.is_some() {
                return Err("tracing: otlp_endpoint is required to export traces".into());
            }
            return Ok(None);
        };
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err(format!(
                "tracing.otlp_endpoint must be an http:// URL (OTLP over HTTP, no TLS), not '{}'",
                endpoint.split("://").next().unwrap_or_default()
            ));
        };
        if rest.is_empty() || endpoint.parse::<http::Uri>().is_err() {
            return Err(format!(
                "tracing.otlp_endpoint '{endpoint}' is not a valid URL"
            ));
        }
        let base = endpoint.trim_end_matches('/');
        let traces_url = if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        };
        Ok(Some(TraceSettings {
            traces_url,
            sample_ratio: ratio,
            service_name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        endpoint: Option<&str>,
        ratio: Option<f64>,
    ) -> Result<Option<TraceSettings>, String> {
        TraceSettings::new(Some(&TracingConfig {
            otlp_endpoint: endpoint.map(str::to_string),
            sample_ratio: ratio,
            service_name: None,
        }))
    }

    #[test]
    fn endpoint_gets_the_traces_path_once() {
        let s = settings(Some("http://collector:4318"), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(s.sample_ratio, 1.0);
        assert_eq!(s.service_name, "bridge");
        let s = settings(Some("http://c:4318/v1/traces/"), Some(0.1))
            .unwrap()
            .unwrap();
        assert_eq!(s.traces_url, "http://c:4318/v1/traces");
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(settings(Some("https://c:4318"), None)
            .unwrap_err()
            .contains("http://"));
        assert!(settings(Some("http://c"), Some(1.5))
            .unwrap_err()
            .contains("sample_ratio"));
        assert!(settings(None, Some(0.5))
            .unwrap_err()
            .contains("otlp_endpoint"));
        assert_eq!(settings(None, None), Ok(None));
        assert_eq!(TraceSettings::new(None), Ok(None));
    }
}

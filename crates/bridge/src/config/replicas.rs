//! Replicas that come and go: DNS discovery's settings, the addresses found, and how they
//! become a deployment's replicas; and the choice of balancing.
//!
//! A `discovery = "dns"` deployment's configured replica URLs are templates: every A/AAAA
//! address of a template's host is a replica (`http://vllm.llm.svc:8000/v1` with addresses
//! 10.0.0.5 and 10.0.0.6 is `http://10.0.0.5:8000/v1` and `http://10.0.0.6:8000/v1`). The
//! addresses are resolved in the background (`upstream::discovery`); each change builds a new
//! routing table in which `config::discovered::apply` gives those deployments their replicas. A deployment whose
//! addresses did not change is the same object; one whose addresses changed is a new object
//! that shares everything stateful with the old one (counters, queue, retry budget, parking)
//! and the state of every replica that stayed. A new address with a health check joins only
//! once a check passes. Requests in flight keep the table they started with, so a replica that
//! disappeared finishes what it has.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::defaults::{DEFAULT_DNS_REFRESH_MS, DEFAULT_PREFIX_LOAD_FACTOR};
use super::file::DeploymentConfig;

/// Where a deployment's replicas come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// The replica URLs as written.
    #[default]
    Static,
    /// Every address of each replica URL's host.
    Dns,
}

/// How a replica is chosen for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The less loaded of two random replicas.
    #[default]
    LeastOutstanding,
    /// The replica a conversation's prefix hashes to (rendezvous hashing), within a load bound.
    Prefix,
}

/// A DNS-discovered deployment's names.
#[derive(Debug, Clone)]
pub struct Dns {
    /// The configured replica URLs, each standing for its host's addresses.
    pub templates: Vec<Template>,
    /// How often the names are resolved again (a shorter TTL wins).
    pub refresh: Duration,
    /// The health check path, for the replicas made from addresses.
    pub health_path: Option<String>,
}

/// A replica URL whose host is a DNS name.
#[derive(Debug, Clone)]
pub struct Template {
    /// The name to resolve.
    pub host: String,
    port: Option<u16>,
    path: String,
}

impl Template {
    fn parse(url: &str) -> Result<Template, String> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("replica URL '{url}' is invalid: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("replica URL '{url}' has no host"))?;
        Ok(Template {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16(),
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The replica URL for one of the host's addresses.
    pub fn expand(&self, ip: &IpAddr) -> String {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match self.port {
            Some(port) => format!("http://{host}:{port}{}", self.path),
            None => format!("http://{host}{}", self.path),
        }
    }
}

/// Every name's addresses as last resolved (sorted, never empty: a name that resolves to
/// nothing keeps its last addresses).
pub type Addresses = BTreeMap<String, Vec<IpAddr>>;

/// What discovery has seen, for `/metrics`: failed resolutions by name.
#[derive(Debug, Default)]
pub struct DnsStatus {
    /// Resolutions that failed or came back empty, by name (the last addresses were kept).
    pub failures: Mutex<BTreeMap<String, u64>>,
}

/// `discovery`, `dns_refresh_ms`, `balance` and `prefix_load_factor` of a deployment, checked.
pub fn settings(
    d: &DeploymentConfig,
    health_path: Option<&str>,
) -> Result<(Option<Dns>, Balance, f64), String> {
    let dns = match d.discovery.unwrap_or_default() {
        Discovery::Static => {
            if d.dns_refresh_ms.is_some() {
                return Err("dns_refresh_ms applies only to discovery = \"dns\"".into());
            }
            None
        }
        Discovery::Dns => {
            let refresh = d.dns_refresh_ms.unwrap_or(DEFAULT_DNS_REFRESH_MS);
            if refresh < 100 {
                return Err("dns_refresh_ms must be at least 100".into());
            }
            let templates = d.replicas.iter().map(|r| Template::parse(r));
            Some(Dns {
                templates: templates.collect::<Result<_, _>>()?,
                refresh: Duration::from_millis(refresh),
                health_path: health_path.map(str::to_string),
            })
        }
    };
    let balance = d.balance.unwrap_or_default();
    let factor = d.prefix_load_factor.unwrap_or(DEFAULT_PREFIX_LOAD_FACTOR);
    if d.prefix_load_factor.is_some() && balance != Balance::Prefix {
        return Err("prefix_load_factor applies only to balance = \"prefix\"".into());
    }
    if !(factor >= 1.0 && factor.is_finite()) {
        return Err(format!(
            "prefix_load_factor must be at least 1, not {factor}"
        ));
    }
    Ok((dns, balance, factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_per_address_family() {
        let t = Template::parse("http://vllm.llm.svc:8000/v1/").unwrap();
        assert_eq!(t.host, "vllm.llm.svc");
        assert_eq!(
            t.expand(&"10.0.0.5".parse().unwrap()),
            "http://10.0.0.5:8000/v1"
        );
        assert_eq!(
            t.expand(&"fd00::5".parse().unwrap()),
            "http://[fd00::5]:8000/v1"
        );
        let t = Template::parse("http://engine").unwrap();
        assert_eq!(t.expand(&"10.0.0.5".parse().unwrap()), "http://10.0.0.5");
    }

    #[test]
    fn settings_refuse_what_does_not_apply() {
        let mut d = DeploymentConfig {
            replicas: vec!["http://e:8000/v1".into()],
            dns_refresh_ms: Some(1000),
            ..Default::default()
        };
        assert!(settings(&d, None).unwrap_err().contains("dns_refresh_ms"));
        d.discovery = Some(Discovery::Dns);
        let (dns, balance, factor) = settings(&d, None).unwrap();
        assert_eq!(dns.unwrap().refresh, Duration::from_millis(1000));
        assert_eq!((balance, factor), (Balance::LeastOutstanding, 1.25));
        d.prefix_load_factor = Some(2.0);
        assert!(settings(&d, None)
            .unwrap_err()
            .contains("prefix_load_factor"));
        d.balance = Some(Balance::Prefix);
        assert_eq!(settings(&d, None).unwrap().2, 2.0);
        d.prefix_load_factor = Some(0.5);
        assert!(settings(&d, None).unwrap_err().contains("at least 1"));
    }
}

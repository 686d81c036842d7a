//! Replicas that come and go: DNS discovery's settings, the addresses found, and how they
//! become a deployment's replicas; and the choice of balancing.
//!
//! A `discovery = "dns"` deployment's configured replica URLs are templates: every A/AAAA
//! address of a template's host is a replica (`http://vllm.llm.svc:8000/v1` with addresses
//! 10.0.0.5 and 10.0.0.6 is `http://10.0.0.5:8000/v1` and `http://10.0.0.6:8000/v1`). The
//! addresses are resolved in the background (`upstream::discovery`); each change builds a new
//! routing table in which [`apply`] gives those deployments their replicas. A deployment whose
//! addresses did not change is the same object; one whose addresses changed is a new object
//! that shares everything stateful with the old one (counters, queue, retry budget, parking)
//! and the state of every replica that stayed. A new address with a health check joins only
//! once a check passes. Requests in flight keep the table they started with, so a replica that
//! disappeared finishes what it has.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::defaults::{DEFAULT_DNS_REFRESH_MS, DEFAULT_PREFIX_LOAD_FACTOR};
use super::file::DeploymentConfig;
use super::registry::{Deployment, Registry, Replica};
use super::state::ReplicaState;

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
    health_path: Option<String>,
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
    fn expand(&self, ip: &IpAddr) -> String {
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

/// Gives every DNS deployment of `registry` the replicas `addresses` say, keeping the state of
/// replicas `previous` had.
pub fn apply(registry: &mut Registry, addresses: &Addresses, previous: Option<&Registry>) {
    for model in registry.models.values_mut() {
        let Some(model) = Arc::get_mut(model) else {
            continue;
        };
        for deployment in model.deployments.values_mut() {
            let Some(dns) = &deployment.dns else {
                continue;
            };
            let mut wanted: Vec<String> = Vec::new();
            for template in &dns.templates {
                for ip in addresses.get(&template.host).into_iter().flatten() {
                    let url = template.expand(ip);
                    if !wanted.contains(&url) {
                        wanted.push(url);
                    }
                }
            }
            if deployment
                .replicas
                .iter()
                .map(|r| &r.base)
                .eq(wanted.iter())
            {
                continue;
            }
            let before = previous
                .and_then(|p| p.model(&model.id))
                .and_then(|m| m.deployments.get(&deployment.id).cloned());
            let replicas = wanted
                .iter()
                .filter_map(|url| replica(deployment, dns, url, before.as_deref()))
                .collect();
            let next = Arc::new(deployment.with_replicas(replicas));
            if let Ok(mut newest) = next.newest.lock() {
                *newest = Arc::downgrade(&next);
            }
            *deployment = next;
        }
    }
}

/// The replica at `url`, with the state it had in `before`, or joining.
fn replica(
    deployment: &Deployment,
    dns: &Dns,
    url: &str,
    before: Option<&Deployment>,
) -> Option<Replica> {
    let mut replica = Replica::parse(url).ok()?;
    if let Some(path) = &dns.health_path {
        replica.health_uri = replica.root_uri(path).ok();
    }
    let kept = before.and_then(|d| d.replicas.iter().find(|r| r.base == replica.base));
    replica.state = match kept {
        Some(same) => same.state.clone(),
        // Never a request before the replica says it is ready.
        None if deployment.health.is_some() => Arc::new(ReplicaState::joining()),
        None => Arc::default(),
    };
    Some(replica)
}

impl Deployment {
    /// A newer generation of this deployment (other discovered replicas), when there is one.
    pub fn newer(&self) -> Option<Arc<Deployment>> {
        let newest = self.newest.lock().ok()?.upgrade()?;
        (!std::ptr::eq(newest.as_ref(), self)).then_some(newest)
    }

    /// The same deployment (counters, queue, budget, parking shared) with other replicas.
    pub fn with_replicas(&self, replicas: Vec<Replica>) -> Deployment {
        Deployment {
            id: self.id.clone(),
            model_id: self.model_id.clone(),
            api: self.api,
            replicas,
            served_model: self.served_model.clone(),
            upstream_auth: self.upstream_auth.clone(),
            connect_timeout: self.connect_timeout,
            first_byte_timeout: self.first_byte_timeout,
            idle_timeout: self.idle_timeout,
            total_timeout: self.total_timeout,
            heartbeat: self.heartbeat,
            inject_usage: self.inject_usage,
            max_retries: self.max_retries,
            eject_after: self.eject_after,
            health: self.health.clone(),
            wake: self.wake.clone(),
            ready: self.ready.clone(),
            limiter: self.limiter.clone(),
            retry_budget: self.retry_budget.clone(),
            reported_model: self.reported_model.clone(),
            stats: self.stats.clone(),
            predict: self.predict.clone(),
            extra_routes: self.extra_routes.clone(),
            config: self.config.clone(),
            retiring: self.retiring.clone(),
            dns: self.dns.clone(),
            newest: self.newest.clone(),
            balance: self.balance,
            load_factor: self.load_factor,
        }
    }
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

    fn registry() -> Registry {
        let text = "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\n\
                    replicas = [\"http://engines.test:8000/v1\"]\ndiscovery = \"dns\"\n";
        crate::config::Config::parse(text, "t")
            .unwrap()
            .validate("t")
            .unwrap()
    }

    fn at(ips: &[&str]) -> Addresses {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        Addresses::from([("engines.test".to_string(), ips)])
    }

    fn deployment(registry: &Registry) -> Arc<Deployment> {
        registry.model("m").unwrap().deployments["d"].clone()
    }

    #[test]
    fn addresses_become_replicas_that_keep_their_state() {
        let mut first = registry();
        apply(&mut first, &Addresses::new(), None);
        assert!(deployment(&first).replicas.is_empty());
        apply(&mut first, &at(&["10.0.0.1"]), None);
        let one = deployment(&first);
        assert_eq!(one.replicas[0].base, "http://10.0.0.1:8000/v1");
        // With the default health check, a new address joins once a check passes.
        assert!(one.replicas[0].state.is_joining());
        assert_eq!(one.replicas[0].state.record_check(true, 1, 2), Some(true));
        assert!(!one.replicas[0].state.is_joining());

        // The next table (a reload builds the deployment from the same config): the address
        // that stays keeps its state, the new one joins, the counters are the same ones.
        let mut second = registry();
        apply(&mut second, &at(&["10.0.0.1", "10.0.0.2"]), Some(&first));
        let two = deployment(&second);
        let bases: Vec<_> = two.replicas.iter().map(|r| r.base.as_str()).collect();
        assert_eq!(
            bases,
            ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
        );
        assert!(Arc::ptr_eq(&two.replicas[0].state, &one.replicas[0].state));
        assert!(two.replicas[1].state.is_joining());

        // The same addresses again: the very same deployment.
        let kept = Arc::clone(&two);
        apply(&mut second, &at(&["10.0.0.1", "10.0.0.2"]), None);
        assert!(Arc::ptr_eq(&kept, &deployment(&second)));
        // Other addresses: a newer generation sharing the counters; the old one knows it.
        apply(&mut second, &at(&["10.0.0.2"]), None);
        let three = deployment(&second);
        assert!(Arc::ptr_eq(&three.stats, &two.stats));
        assert!(Arc::ptr_eq(&two.newer().unwrap(), &three));
        assert!(three.newer().is_none());
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

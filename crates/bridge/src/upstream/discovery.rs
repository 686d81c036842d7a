//! DNS discovery: the addresses behind `discovery = "dns"` deployments' names, kept current.
//!
//! Every name is resolved (A and AAAA, through the system's resolvers or `[server] resolvers`)
//! every `dns_refresh_ms`, sooner when a record's TTL is shorter. A change of any name's
//! addresses installs a new routing table ([`Live::rediscover`]), which gives the deployments
//! their new replicas (see [`crate::config::replicas`]). A failed or empty answer keeps the last
//! addresses: it is logged once (and again when the name resolves), and counted in `/metrics`.
//! Bridge resolves the names once before it serves, so discovered deployments start with
//! their replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::live::Live;
use crate::config::registry::Registry;
use crate::config::replicas::Addresses;

/// Longest wait for one answer (each name gets two tries).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Names are never resolved more often than this, whatever their TTL says.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// Resolves the names of the table in force, and again whenever they are due or the table
/// changes. Never completes.
pub async fn discover_forever(live: Arc<Live>) {
    let mut discovery = Discovery::default();
    let mut changed = live.subscribe();
    loop {
        // A table installed while this round runs (a reload naming new names) is looked at
        // as soon as the round ends.
        changed.borrow_and_update();
        let wait = discovery.round(&live).await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            result = changed.changed() => {
                if result.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// One round, for when Bridge starts: discovered deployments then serve from the first request.
pub async fn discover_once(live: &Live) {
    Discovery::default().round(live).await;
}

/// The resolver (rebuilt when `[server] resolvers` changes) and the names failing now.
#[derive(Default)]
struct Discovery {
    resolver: Option<(Vec<SocketAddr>, TokioResolver)>,
    failing: BTreeSet<String>,
    /// The last reason a new table was refused (said once, until it changes).
    refused: Option<String>,
}

impl Discovery {
    /// Resolves every name once; installs a table if any name's addresses changed. Returns
    /// how long until the next round.
    async fn round(&mut self, live: &Live) -> Duration {
        let registry = live.load();
        let names = names(&registry);
        let Some(mut wait) = names.values().min().copied() else {
            return Duration::from_secs(3600);
        };
        let resolver = match self.resolver(&registry.resolvers) {
            Ok(resolver) => resolver,
            Err(e) => {
                tracing::error!("DNS discovery cannot start its resolver: {e}");
                return wait;
            }
        };
        let lookups = names.keys().map(|name| async move {
            // A trailing dot: the name as written, without the resolv.conf search list.
            let fqdn = if name.ends_with('.') {
                name.clone()
            } else {
                format!("{name}.")
            };
            (name, resolver.lookup_ip(fqdn).await)
        });
        let results = futures_util::future::join_all(lookups).await;
        let current = live.addresses();
        let mut next = Addresses::new();
        for (name, result) in results {
            let found = result.map(|lookup| {
                let ttl = lookup
                    .as_lookup()
                    .answers()
                    .iter()
                    .map(|record| record.ttl)
                    .min();
                let mut addresses: Vec<_> = lookup.iter().collect();
                addresses.sort();
                addresses.dedup();
                (addresses, ttl)
            });
            match found {
                Ok((addresses, ttl)) if !addresses.is_empty() => {
                    if let Some(ttl) = ttl {
                        wait = wait.min(Duration::from_secs(ttl.into()));
                    }
                    if self.failing.remove(name) {
                        tracing::info!(name = %name, "DNS name resolves again");
                    }
                    next.insert(name.clone(), addresses);
                }
                failed => {
                    let why = match failed {
                        Err(e) => e.to_string(),
                        Ok(_) => "no address".to_string(),
                    };
                    if let Ok(mut failures) = registry.dns_status.failures.lock() {
                        *failures.entry(name.clone()).or_default() += 1;
                    }
                    let kept = current.get(name);
                    if self.failing.insert(name.clone()) {
                        tracing::warn!(name = %name, error = %why, kept = kept.map_or(0, Vec::len), "DNS resolution failed; the last addresses are kept");
                    }
                    if let Some(kept) = kept {
                        next.insert(name.clone(), kept.clone());
                    }
                }
            }
        }
        if next != *current {
            for (name, addresses) in &next {
                if current.get(name) != Some(addresses) {
                    tracing::info!(name = %name, addresses = ?addresses, "DNS name's addresses changed");
                }
            }
            match live.rediscover(next).await {
                Ok(()) => self.refused = None,
                Err(e) if self.refused.as_deref() != Some(&e.to_string()) => {
                    tracing::error!(
                        "discovered replicas not installed (tried again each round): {e}"
                    );
                    self.refused = Some(e.to_string());
                }
                Err(_) => {}
            }
        }
        wait.max(MIN_REFRESH)
    }

    /// The resolver for `servers` (the system's when empty), built once per list.
    fn resolver(&mut self, servers: &[SocketAddr]) -> Result<&TokioResolver, String> {
        if self.resolver.as_ref().is_none_or(|(s, _)| s != servers) {
            self.resolver = Some((servers.to_vec(), build(servers)?));
        }
        match &self.resolver {
            Some((_, resolver)) => Ok(resolver),
            None => Err("no resolver".into()),
        }
    }
}

/// Every discovered name of `registry`, with the shortest refresh among the deployments using it.
fn names(registry: &Registry) -> BTreeMap<String, Duration> {
    let mut names = BTreeMap::new();
    for model in registry.models.values() {
        for deployment in model.deployments.values() {
            let Some(dns) = &deployment.dns else {
                continue;
            };
            for template in &dns.templates {
                let refresh = names.entry(template.host.clone()).or_insert(dns.refresh);
                *refresh = (*refresh).min(dns.refresh);
            }
        }
    }
    names
}

/// A resolver without a cache (Bridge re-resolves on its own schedule, and a cache would hide
/// changes until their TTL ran out), asking for A and AAAA records together.
fn build(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("/etc/resolv.conf: {e}"))?
    } else {
        let mut list = Vec::new();
        for server in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            list.push(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
        }
        let config = ResolverConfig::from_name_servers(list);
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    let options = builder.options_mut();
    options.timeout = LOOKUP_TIMEOUT;
    options.attempts = 1;
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Always;
    builder.build().map_err(|e| e.to_string())
}

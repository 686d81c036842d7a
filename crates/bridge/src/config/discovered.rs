//! Discovered addresses made replicas: each new routing table gives its DNS deployments the
//! replicas the last resolution found (see [`super::replicas`] for the settings and why).

use std::sync::Arc;

use super::registry::{Deployment, Registry, Replica};
use super::replicas::{Addresses, Dns};
use super::state::ReplicaState;

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
}

//! The validated, runtime form of the configuration: what requests are routed against.
//!
//! Everything that can be worked out once is worked out here (upstream URIs per route, the
//! `Authorization` header for each engine, key digests), so the request path only does lookups.
//! [`crate::config::validate`] builds it from the operator's config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use tokio::sync::OnceCell;

pub use super::endpoint::{Endpoint, Target};
use super::file::{Api, DeploymentConfig};
use super::keys::Keys;
use super::quota::{LimitSettings, Quota};
use super::replicas::{Balance, Dns, DnsStatus};
use super::response_ids::ResponseIds;
use super::state::{Limiter, ReplicaState, RetryBudget};
use super::traces::TraceSettings;
use crate::config::stats::Stats;

/// Longest model or deployment id accepted in config (and so worth looking up).
pub const MAX_ID_LEN: usize = 256;

/// Runtime routing table and settings.
#[derive(Debug)]
pub struct Registry {
    /// Client listener address (a restart applies a change).
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_request_bytes: u64,
    /// Time allowed to receive a request body.
    pub body_read_timeout: Duration,
    /// Time allowed to receive a request's headers.
    pub header_read_timeout: Duration,
    /// Answer clients that half-close after their request (`[server] half_close`).
    pub half_close: bool,
    /// How long requests in flight may run after a stop was requested.
    pub drain_timeout: Duration,
    /// How long new connections are still accepted after a stop was requested.
    pub drain_delay: Duration,
    /// Worker threads to serve with.
    pub workers: usize,
    /// Client keys; empty: authentication off.
    pub keys: Keys,
    /// Where the fleet's limits are counted (a restart applies a change).
    pub limits: LimitSettings,
    /// Where traces go (a restart applies a change); `None`: no traces.
    pub tracing: Option<TraceSettings>,
    /// DNS servers for discovered deployments; empty: the system's (a restart applies a change).
    pub resolvers: Vec<SocketAddr>,
    /// What DNS discovery has seen (kept across reloads by the live table).
    pub dns_status: Arc<DnsStatus>,
    /// Some key or model has limits: requests go through admission.
    pub limited: bool,
    /// When this configuration was loaded (Unix seconds): the models' `created`.
    pub created: u64,
    /// Sorted by id, so listings are stable.
    pub models: BTreeMap<String, Arc<Model>>,
    /// `key` label values for metrics: `-`, then the key names.
    pub key_labels: Vec<String>,
    /// Requests that never reached a deployment (refused before routing, or unroutable).
    pub unrouted: Stats,
    /// Which replica made which stored response; kept across reloads.
    pub response_ids: Arc<ResponseIds>,
    /// The admin API, when configured.
    pub admin: Option<AdminSettings>,
    /// `/metrics` is served on the client listener (it always is on the admin listener).
    pub public_metrics: bool,
    /// Every deployment's `extra_routes`: paths dispatch forwards (the deployment decides).
    pub extra_routes: std::collections::BTreeSet<String>,
}

/// Validated `[admin]`.
#[derive(Debug)]
pub struct AdminSettings {
    /// Admin listener address.
    pub listen: SocketAddr,
    /// Admin keys; empty only on a loopback listener.
    pub keys: Keys,
}

#[derive(Debug)]
/// A model clients can route to.
pub struct Model {
    /// Its id, as clients name it.
    pub id: String,
    /// The deployment that serves when the client names none.
    pub production: String,
    /// Its deployments by id.
    pub deployments: BTreeMap<String, Arc<Deployment>>,
    /// Limits on everyone's requests to it together.
    pub quota: Quota,
}

#[derive(Debug)]
/// One deployment of a model: its replicas and every setting its requests need, worked out once.
pub struct Deployment {
    /// Its id, as clients name it.
    pub id: String,
    /// The model it belongs to.
    pub model_id: String,
    /// What its replicas speak.
    pub api: Api,
    /// The engine processes serving it (for `discovery = "dns"`: the addresses found, which
    /// may be none yet).
    pub replicas: Vec<Replica>,
    /// The engine's model name, when configured (else asked of a replica).
    pub served_model: Option<String>,
    /// `Authorization` value for the engine, when it has a key.
    pub upstream_auth: Option<HeaderValue>,
    /// Time allowed to open a connection to a replica.
    pub connect_timeout: Duration,
    /// Time allowed for the engine's response headers.
    pub first_byte_timeout: Duration,
    /// Longest silence between response chunks.
    pub idle_timeout: Duration,
    /// Whole-request limit, if any.
    pub total_timeout: Option<Duration>,
    /// SSE keep-alive comment interval, when on.
    pub heartbeat: Option<Duration>,
    /// Ask the engine for usage on streams whose client did not.
    pub inject_usage: bool,
    /// Retries on other replicas for requests that never reached an engine.
    pub max_retries: u32,
    /// Consecutive failures that eject a replica.
    pub eject_after: u32,
    /// Active health checking, when on.
    pub health: Option<HealthCheck>,
    /// Parking while the deployment wakes, when configured.
    pub wake: Option<Arc<Wake>>,
    /// Signalled whenever one of the replicas becomes healthy (wakes parked requests).
    pub ready: Arc<tokio::sync::Notify>,
    /// Concurrency cap and queue, when configured.
    pub limiter: Option<Arc<Limiter>>,
    /// Limits retries across all of this deployment's requests.
    pub retry_budget: Arc<RetryBudget>,
    /// The model name a replica reported via `GET /models`, fetched on first need.
    pub reported_model: Arc<OnceCell<Arc<str>>>,
    /// What `/metrics` reports for this deployment.
    pub stats: Arc<Stats>,
    /// The predict adapter's settings (`api = "predict"` only).
    pub predict: Option<super::predict::PredictSettings>,
    /// Engine routes beyond Bridge's table that this deployment allows (`extra_routes`).
    pub extra_routes: Vec<String>,
    /// The configuration it was built from (a reload with the same one keeps this deployment,
    /// its counters and queues).
    pub config: DeploymentConfig,
    /// Being retired: takes no new requests, and leaves the configuration once idle.
    pub retiring: Arc<std::sync::atomic::AtomicBool>,
    /// `discovery = "dns"`: the names its replicas are found under.
    pub dns: Option<Dns>,
    /// The newest generation of this deployment (DNS changes make new ones, sharing this
    /// cell): a request parked on an older one moves to it.
    pub newest: Arc<std::sync::Mutex<std::sync::Weak<Deployment>>>,
    /// How a replica is chosen for each request.
    pub balance: Balance,
    /// `balance = "prefix"`: the most a replica takes, as a factor of the mean in flight.
    pub load_factor: f64,
}

/// How replicas are checked.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Time between checks of one replica.
    pub interval: Duration,
    /// Consecutive passes that make a replica healthy again.
    pub healthy_after: u32,
    /// Consecutive failures that make it unhealthy.
    pub unhealthy_after: u32,
}

/// Parking settings of a deployment that scales to zero.
#[derive(Debug)]
pub struct Wake {
    /// Longest wait for a replica to become ready.
    pub timeout: Duration,
    /// Called (POST) once per wake-up, when set.
    pub url: Option<Uri>,
    /// Most requests parked at once.
    pub max_parked: usize,
    /// Requests parked now.
    pub parked: std::sync::atomic::AtomicUsize,
    /// Whether the wake URL was called since the deployment was last seen ready.
    pub called: std::sync::atomic::AtomicBool,
}

/// One engine process serving a deployment.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The base URL as configured (without a trailing slash), for logs and status.
    pub base: String,
    /// The base URL's hash: its identity for prefix affinity (rendezvous hashing), the same on
    /// every instance.
    pub key: u64,
    /// Where each [`Endpoint`] lands on it, worked out once.
    uris: Vec<Uri>,
    /// Load and health, shared by all workers, and kept across reloads while the replica stays
    /// in its deployment.
    pub state: Arc<ReplicaState>,
    /// Where its active health check goes, when checks are on.
    pub health_uri: Option<Uri>,
}

impl Replica {
    /// A replica from its configured base URL: `http://host:port/path`, no query, no https.
    pub fn parse(base: &str) -> Result<Replica, String> {
        let base = base.trim_end_matches('/').to_string();
        if let Some(redacted) = without_userinfo(&base) {
            // Never echoed: the part before '@' may be a password.
            return Err(format!(
                "replica URL '{redacted}' has credentials before '@': they would reach the \
                 engine in the Host header and the logs; put the engine's key in api_key_env \
                 or api_key_file instead"
            ));
        }
        let parsed: Uri = base
            .parse()
            .map_err(|e| format!("replica URL '{base}' is invalid: {e}"))?;
        match parsed.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "replica URL '{base}': https upstreams are not supported yet; \
                     reach the engine over http on a private network"
                ))
            }
            _ => return Err(format!("replica URL '{base}' must start with http://")),
        }
        if parsed.host().is_none() {
            return Err(format!("replica URL '{base}' has no host"));
        }
        if parsed.query().is_some() {
            return Err(format!("replica URL '{base}' must not have a query string"));
        }
        let root = format!(
            "http://{}",
            parsed.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let mut uris = Vec::with_capacity(Endpoint::ALL.len());
        for endpoint in Endpoint::ALL {
            let uri = match endpoint.target() {
                Target::Base(path) => format!("{base}{path}"),
                Target::Root(path) => format!("{root}{path}"),
            };
            uris.push(
                uri.parse::<Uri>()
                    .map_err(|e| format!("replica URL '{base}': {e}"))?,
            );
        }
        Ok(Replica {
            key: xxhash_rust::xxh3::xxh3_64(base.as_bytes()),
            base,
            uris,
            state: Arc::default(),
            health_uri: None,
        })
    }

    /// `path` at the replica's server root (where vLLM, SGLang and llama.cpp serve `/health`).
    pub(crate) fn root_uri(&self, path: &str) -> Result<Uri, String> {
        let base: Uri = self.base.parse().map_err(|e| format!("{e}"))?;
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        format!("http://{authority}{path}")
            .parse()
            .map_err(|e| format!("health_path '{path}': {e}"))
    }

    /// Health, ejection and load as JSON, with the address only for operators.
    pub fn status(&self, with_address: bool) -> serde_json::Value {
        let mut status = serde_json::json!({
            "healthy": self.state.is_healthy(),
            "ejected": self.state.is_ejected(),
            "in_flight": self.state.outstanding(),
        });
        if with_address {
            status["url"] = self.base.clone().into();
        }
        status
    }

    /// The replica's URI for `endpoint` (built once, cloned per request).
    pub fn uri(&self, endpoint: Endpoint) -> Uri {
        self.uris[endpoint as usize].clone()
    }

    /// The replica's URI for `endpoint`, with the request's own part of the path, `tail`: the
    /// stored response's id (`{base}/responses/{id}/cancel`), or an extra route
    /// (`{base}/{route}`). Both were checked: neither can be a path of its own.
    /// `query`, the client's, follows such a path as it came (it cannot change the path).
    /// `None` when the result is no URI (too long): never another path instead.
    pub fn uri_for(
        &self,
        endpoint: Endpoint,
        tail: Option<&str>,
        query: Option<&str>,
    ) -> Option<Uri> {
        let path = match (endpoint, endpoint.id_suffix(), tail) {
            (Endpoint::Extra, _, Some(route)) => format!("{}/{route}", self.base),
            (_, Some(suffix), Some(id)) => format!("{}/responses/{id}{suffix}", self.base),
            _ => return Some(self.uri(endpoint)),
        };
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        uri.parse().ok()
    }
}

/// `scheme://***@rest` when `url`'s authority has userinfo (`user:password@`), else `None`.
fn without_userinfo(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://***@{}", &rest[at + 1..]))
}

impl Registry {
    /// The model with this id.
    pub fn model(&self, id: &str) -> Option<&Arc<Model>> {
        self.models.get(id)
    }

    /// The routing table as text, for `bridge check`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for model in self.models.values() {
            out.push_str(&format!("model {}\n", model.id));
            for d in model.deployments.values() {
                let api = d.api.name();
                let production = if d.id == model.production {
                    " (production)"
                } else {
                    ""
                };
                out.push_str(&format!("  deployment {} [{api}]{production}\n", d.id));
                for r in &d.replicas {
                    out.push_str(&format!("    replica {}\n", r.base));
                }
            }
        }
        let keys = self.key_labels.len() - 1;
        out.push_str(&format!(
            "{} model(s); {} client key(s){}; admin API {}\n",
            self.models.len(),
            keys,
            if keys == 0 { " (no auth!)" } else { "" },
            self.admin
                .as_ref()
                .map_or("off".to_string(), |a| format!("on {}", a.listen)),
        ));
        out
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;

//! The validated, runtime form of the configuration: what requests are routed against.
//!
//! Everything that can be worked out once is worked out here (upstream URIs per route, the
//! `Authorization` header for each engine, key digests), so the request path only does lookups.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use tokio::sync::OnceCell;

use crate::auth::{ApiKey, Keys};
use crate::balance::{Limiter, ReplicaState, RetryBudget};
use crate::config::{
    AdminConfig, Api, Config, ConfigError, DeploymentConfig, KeyConfig, ModelConfig,
    DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_MAX_REQUEST_BYTES,
};
use crate::metrics::Stats;

/// Default time allowed for response headers: the OpenAI SDK's own 600 s timeout.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 600_000;

/// Longest model or deployment id accepted in config (and so worth looking up).
pub const MAX_ID_LEN: usize = 256;

/// Runtime routing table and settings.
#[derive(Debug)]
pub struct Registry {
    pub listen: SocketAddr,
    pub max_request_bytes: u64,
    /// Time allowed to receive a request body.
    pub body_read_timeout: Duration,
    /// Time allowed to receive a request's headers.
    pub header_read_timeout: Duration,
    /// How long requests in flight may run after a stop was requested.
    pub drain_timeout: Duration,
    /// How long new connections are still accepted after a stop was requested.
    pub drain_delay: Duration,
    /// Worker threads to serve with.
    pub workers: usize,
    pub keys: Keys,
    /// When this configuration was loaded (Unix seconds): the models' `created`.
    pub created: u64,
    /// Sorted by id, so listings are stable.
    pub models: BTreeMap<String, Arc<Model>>,
    /// `key` label values for metrics: `-`, then the key names.
    pub key_labels: Vec<String>,
    /// Requests that never reached a deployment (refused before routing, or unroutable).
    pub unrouted: Stats,
    /// The admin API, when configured.
    pub admin: Option<AdminSettings>,
}

/// Validated `[admin]`.
#[derive(Debug)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Admin keys; empty only on a loopback listener.
    pub keys: Keys,
}

#[derive(Debug)]
pub struct Model {
    pub id: String,
    pub production: String,
    pub deployments: BTreeMap<String, Arc<Deployment>>,
}

#[derive(Debug)]
pub struct Deployment {
    pub id: String,
    pub model_id: String,
    pub api: Api,
    pub replicas: Vec<Replica>,
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
    pub wake: Option<Wake>,
    /// Signalled whenever one of the replicas becomes healthy (wakes parked requests).
    pub ready: tokio::sync::Notify,
    /// Concurrency cap and queue, when configured.
    pub limiter: Option<Limiter>,
    /// Limits retries across all of this deployment's requests.
    pub retry_budget: RetryBudget,
    /// The model name a replica reported via `GET /models`, fetched on first need.
    pub reported_model: OnceCell<Arc<str>>,
    /// What `/metrics` reports for this deployment.
    pub stats: Stats,
    /// The predict adapter's settings (`api = "predict"` only).
    pub predict: Option<PredictSettings>,
    /// The configuration it was built from (a reload with the same one keeps this deployment,
    /// its counters and queues).
    pub config: DeploymentConfig,
    /// Being retired: takes no new requests, and leaves the configuration once idle.
    pub retiring: std::sync::atomic::AtomicBool,
}

/// Validated `[models.deployments.predict]`.
#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub output_key: String,
    /// Forwarded field → the name the model expects.
    pub rename: BTreeMap<String, String>,
    /// Fields forwarded as they are, beyond the adapter's own list.
    pub extra_fields: Vec<String>,
}

/// How replicas are checked.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

/// Parking settings of a deployment that scales to zero.
#[derive(Debug)]
pub struct Wake {
    pub timeout: Duration,
    pub url: Option<Uri>,
    pub max_parked: usize,
    /// Requests parked now.
    pub parked: std::sync::atomic::AtomicUsize,
    /// Whether the wake URL was called since the deployment was last seen ready.
    pub called: std::sync::atomic::AtomicBool,
}

/// The OpenAI routes Bridge forwards, and where each lands on an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    /// A predict deployment's replica URL itself.
    Predict,
}

impl Endpoint {
    /// Index of the `route` label in metrics (forwarded routes only).
    pub fn metrics_index(self) -> usize {
        match self {
            Endpoint::ChatCompletions => 0,
            Endpoint::Completions => 1,
            _ => 2,
        }
    }

    pub const ALL: [Endpoint; 5] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::Predict,
    ];

    /// Path appended to a replica's base URL.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Models => "/models",
            Endpoint::Predict => "",
        }
    }
}

/// One engine process serving a deployment.
#[derive(Debug)]
pub struct Replica {
    /// The base URL as configured (without a trailing slash), for logs and status.
    pub base: String,
    uris: [Uri; 5],
    /// Load and health, shared by all workers, and kept across reloads while the replica stays
    /// in its deployment.
    pub state: Arc<ReplicaState>,
    /// Where its active health check goes, when checks are on.
    pub health_uri: Option<Uri>,
}

impl Replica {
    pub fn parse(base: &str) -> Result<Replica, String> {
        let base = base.trim_end_matches('/').to_string();
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
        let mut uris = Vec::with_capacity(Endpoint::ALL.len());
        for endpoint in Endpoint::ALL {
            let uri = format!("{base}{}", endpoint.suffix());
            uris.push(
                uri.parse::<Uri>()
                    .map_err(|e| format!("replica URL '{base}': {e}"))?,
            );
        }
        let uris: [Uri; 5] = uris
            .try_into()
            .map_err(|_| "internal: endpoint count".to_string())?;
        Ok(Replica {
            base,
            uris,
            state: Arc::default(),
            health_uri: None,
        })
    }

    /// `path` at the replica's server root (where vLLM, SGLang and llama.cpp serve `/health`).
    fn root_uri(&self, path: &str) -> Result<Uri, String> {
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

    pub fn uri(&self, endpoint: Endpoint) -> Uri {
        self.uris[endpoint as usize].clone()
    }
}

impl Registry {
    pub fn model(&self, id: &str) -> Option<&Arc<Model>> {
        self.models.get(id)
    }

    /// The routing table as text, for `bridge check`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for model in self.models.values() {
            out.push_str(&format!("model {}\n", model.id));
            for d in model.deployments.values() {
                let api = match d.api {
                    Api::Openai => "openai",
                    Api::Predict => "predict",
                };
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

/// Reads a secret from a literal, an environment variable or a file (exactly one of them).
fn secret(
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

/// Ids appear in URLs (`/v1/models/{id}`), so they are limited to URL-unreserved characters:
/// no client has to percent-encode them.
fn check_id(what: &str, id: &str) -> Result<(), String> {
    let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(unreserved) {
        return Err(format!(
            "{what} '{id}' must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
        ));
    }
    Ok(())
}

impl Config {
    /// Validates the configuration into a [`Registry`]; `name` is the file for error messages.
    pub fn validate(&self, name: &str) -> Result<Registry, ConfigError> {
        self.validate_after(name, None)
    }

    /// Validates the configuration into a [`Registry`] that replaces `previous`: deployments
    /// whose configuration did not change are kept as they are (counters, queues, cached
    /// model name), and replicas that stay in their deployment keep their health and load.
    pub fn validate_after(
        &self,
        name: &str,
        previous: Option<&Registry>,
    ) -> Result<Registry, ConfigError> {
        self.validate_inner(previous)
            .map_err(|message| ConfigError {
                source_name: name.to_string(),
                message,
            })
    }

    fn validate_inner(&self, previous: Option<&Registry>) -> Result<Registry, String> {
        let listen_text = self.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text
            .parse()
            .map_err(|e| format!("server.listen '{listen_text}' is not an address: {e}"))?;
        let max_request_bytes = self
            .server
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes == 0 {
            return Err("server.max_request_bytes must be positive".into());
        }
        let key_labels = self.auth.keys.len() + 1;
        let label_names: Vec<String> = std::iter::once("-".to_string())
            .chain(self.auth.keys.iter().map(|k| k.name.clone()))
            .collect();
        // Deployments are kept whole only while the key labels (a dimension of their
        // counters) are the same.
        let keep_from = previous.filter(|p| p.key_labels == label_names);
        let mut models = BTreeMap::new();
        for (i, model) in self.models.iter().enumerate() {
            let before = Before {
                whole: keep_from.and_then(|p| p.model(&model.id)),
                replicas: previous.and_then(|p| p.model(&model.id)),
            };
            let built = validate_model(model, key_labels, &before)
                .map_err(|e| format!("models[{i}]: {e}"))?;
            if models.insert(model.id.clone(), Arc::new(built)).is_some() {
                return Err(format!(
                    "models[{i}]: model id '{}' is defined twice",
                    model.id
                ));
            }
        }
        let mut names = HashSet::new();
        let mut keys = Vec::new();
        for (i, key) in self.auth.keys.iter().enumerate() {
            keys.push(validate_key(key).map_err(|e| format!("auth.keys[{i}]: {e}"))?);
            if !names.insert(key.name.as_str()) {
                return Err(format!(
                    "auth.keys[{i}]: key name '{}' is used twice",
                    key.name
                ));
            }
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let workers = match self.server.workers {
            Some(0) => return Err("server.workers must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let body_read_timeout =
            Duration::from_millis(self.server.body_read_timeout_ms.unwrap_or(60_000).max(1));
        let drain_timeout = Duration::from_millis(self.server.drain_timeout_ms.unwrap_or(30_000));
        let header_read_timeout = self
            .server
            .header_read_timeout_ms
            .map_or(crate::server::HEADER_READ_TIMEOUT, |ms| {
                Duration::from_millis(ms.max(1))
            });
        let drain_delay = Duration::from_millis(self.server.drain_delay_ms.unwrap_or(0));
        let keys = Keys::new(keys);
        let admin = self.admin.as_ref().map(validate_admin).transpose()?;
        Ok(Registry {
            admin,
            key_labels: keys.labels(),
            unrouted: Stats::new(key_labels),
            listen,
            max_request_bytes,
            drain_timeout,
            drain_delay,
            body_read_timeout,
            header_read_timeout,
            workers,
            keys,
            created,
            models,
        })
    }
}

/// What a reload may keep of a model: whole deployments (when the key labels are unchanged),
/// and replica state.
struct Before<'a> {
    whole: Option<&'a Arc<Model>>,
    replicas: Option<&'a Arc<Model>>,
}

fn validate_model(
    model: &ModelConfig,
    key_labels: usize,
    before: &Before<'_>,
) -> Result<Model, String> {
    check_id("model id", &model.id)?;
    if model.deployments.is_empty() {
        return Err(format!("model '{}' has no deployments", model.id));
    }
    let mut deployments = BTreeMap::new();
    for (i, d) in model.deployments.iter().enumerate() {
        let kept = before
            .whole
            .and_then(|m| m.deployments.get(&d.id))
            // Same settings and the same engine key as read now (a rotated key file or
            // variable makes a new deployment).
            .filter(|old| {
                old.config == *d && engine_auth(d).ok().as_ref() == Some(&old.upstream_auth)
            });
        let built = match kept {
            Some(old) => old.clone(),
            None => {
                let mut built = validate_deployment(&model.id, d, key_labels)
                    .map_err(|e| format!("deployments[{i}]: {e}"))?;
                if let Some(old) = before.replicas.and_then(|m| m.deployments.get(&d.id)) {
                    for replica in &mut built.replicas {
                        if let Some(same) = old.replicas.iter().find(|r| r.base == replica.base) {
                            replica.state = same.state.clone();
                        }
                    }
                }
                Arc::new(built)
            }
        };
        if deployments.insert(d.id.clone(), built).is_some() {
            return Err(format!(
                "deployments[{i}]: deployment id '{}' is defined twice",
                d.id
            ));
        }
    }
    let production = match (&model.production, model.deployments.as_slice()) {
        (Some(p), _) => p.clone(),
        (None, [only]) => only.id.clone(),
        (None, _) => {
            return Err(format!(
                "model '{}' has several deployments: set production to one of them",
                model.id
            ))
        }
    };
    if !deployments.contains_key(&production) {
        return Err(format!(
            "production deployment '{production}' is not among the deployments"
        ));
    }
    Ok(Model {
        id: model.id.clone(),
        production,
        deployments,
    })
}

fn validate_deployment(
    model_id: &str,
    d: &DeploymentConfig,
    key_labels: usize,
) -> Result<Deployment, String> {
    check_id("deployment id", &d.id)?;
    if d.replicas.is_empty() {
        return Err(format!("deployment '{}' has no replicas", d.id));
    }
    let mut replicas = d
        .replicas
        .iter()
        .map(|r| Replica::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let health_path = d.health_path.clone().unwrap_or_else(|| match d.api {
        Api::Openai => "/health".to_string(),
        Api::Predict => String::new(),
    });
    let health = (!health_path.is_empty()).then(|| HealthCheck {
        interval: Duration::from_millis(d.health_interval_ms.unwrap_or(5_000).max(10)),
        healthy_after: d.healthy_after.unwrap_or(1).max(1),
        unhealthy_after: d.unhealthy_after.unwrap_or(2).max(1),
    });
    if health.is_some() {
        for replica in &mut replicas {
            replica.health_uri = Some(replica.root_uri(&health_path)?);
        }
    }
    let wake = match d.wake_timeout_ms {
        None => None,
        Some(ms) => Some(Wake {
            timeout: Duration::from_millis(ms),
            url: d
                .wake_url
                .as_deref()
                .map(|u| u.parse::<Uri>().map_err(|e| format!("wake_url '{u}': {e}")))
                .transpose()?,
            max_parked: d.max_parked.unwrap_or(1024),
            parked: Default::default(),
            called: Default::default(),
        }),
    };
    let predict = match (d.api, &d.predict) {
        (Api::Openai, Some(_)) => {
            return Err("a [predict] table applies only to api = \"predict\" deployments".into())
        }
        (Api::Openai, None) => None,
        (Api::Predict, config) => Some(crate::predict::settings(config.as_ref())?),
    };
    let upstream_auth = engine_auth(d)?;
    Ok(Deployment {
        id: d.id.clone(),
        model_id: model_id.to_string(),
        api: d.api,
        replicas,
        served_model: d.served_model.clone(),
        upstream_auth,
        first_byte_timeout: Duration::from_millis(
            d.timeouts
                .first_byte_ms
                .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT_MS)
                .max(1),
        ),
        connect_timeout: d
            .timeouts
            .connect_ms
            .map_or(crate::pool::CONNECT_TIMEOUT, |ms| {
                Duration::from_millis(ms.max(1))
            }),
        idle_timeout: Duration::from_millis(d.timeouts.idle_ms.unwrap_or(300_000).max(1)),
        total_timeout: d.timeouts.total_ms.map(Duration::from_millis),
        heartbeat: d
            .heartbeat_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis),
        inject_usage: d.inject_usage.unwrap_or(true),
        max_retries: d.max_retries.unwrap_or(2),
        eject_after: d.eject_after.unwrap_or(5).max(1),
        retry_budget: RetryBudget::default(),
        health,
        wake,
        ready: tokio::sync::Notify::new(),
        limiter: d.max_concurrent.filter(|&n| n > 0).map(|n| {
            let wait = Duration::from_millis(d.queue_timeout_ms.unwrap_or(30_000));
            Limiter::new(n, d.max_queued.unwrap_or(0), wait)
        }),
        reported_model: OnceCell::new(),
        stats: Stats::new(key_labels),
        predict,
        config: d.clone(),
        retiring: Default::default(),
    })
}

/// The `Authorization` value for a deployment's engine, read from its variable or file now.
fn engine_auth(d: &DeploymentConfig) -> Result<Option<HeaderValue>, String> {
    let key = secret(
        "engine key",
        None,
        d.api_key_env.as_deref(),
        d.api_key_file.as_deref(),
    )?;
    key.map(|k| {
        let mut v = HeaderValue::try_from(format!("Bearer {k}"))
            .map_err(|_| "engine key has characters not allowed in a header".to_string())?;
        v.set_sensitive(true);
        Ok(v)
    })
    .transpose()
}

fn validate_admin(admin: &AdminConfig) -> Result<AdminSettings, String> {
    let text = admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen: SocketAddr = text
        .parse()
        .map_err(|e| format!("admin.listen '{text}' is not an address: {e}"))?;
    let keys = admin
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| validate_key(k).map_err(|e| format!("admin.keys[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() && !listen.ip().is_loopback() {
        return Err(format!(
            "admin.listen {listen} is not loopback: configure [[admin.keys]] so that only operators can change deployments"
        ));
    }
    Ok(AdminSettings {
        listen,
        keys: Keys::new(keys),
    })
}

fn validate_key(key: &KeyConfig) -> Result<ApiKey, String> {
    if key.name.is_empty() {
        return Err("name must not be empty".into());
    }
    let what = format!("key '{}'", key.name);
    let secret = secret(
        &what,
        key.key.as_deref(),
        key.key_env.as_deref(),
        key.key_file.as_deref(),
    )?
    .ok_or_else(|| format!("{what}: set one of key, key_env or key_file"))?;
    Ok(ApiKey::new(&key.name, &secret, key.models.clone()))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;

//! Validation: the operator's [`Config`] into the runtime [`Registry`], with errors that name
//! the field, and what a reload keeps of the registry it replaces.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};

use super::endpoint::check_extra_routes;
use super::file::*;
use super::keys::{secret, ApiKey, Keys};
use super::quota::{LimitSettings, Quota};
use super::registry::{
    AdminSettings, Deployment, HealthCheck, Model, Registry, Replica, Wake, MAX_ID_LEN,
};
use super::state::Limiter;
use super::traces::TraceSettings;
use crate::config::stats::Stats;

/// Ids appear in URLs (`/v1/models/{id}`), so they are limited to URL-unreserved characters:
/// no client has to percent-encode them.
fn check_id(what: &str, id: &str) -> Result<(), String> {
    let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    // `.` and `..` are path segments of their own: as ids they would name other routes.
    let dots = id == "." || id == "..";
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(unreserved) || dots {
        return Err(format!(
            "{what} '{id}' must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '-', '.', '_', '~', \
             and not '.' or '..'"
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
        let body_read_timeout = Duration::from_millis(
            self.server
                .body_read_timeout_ms
                .unwrap_or(DEFAULT_BODY_READ_TIMEOUT_MS)
                .max(1),
        );
        let drain_timeout = Duration::from_millis(
            self.server
                .drain_timeout_ms
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT_MS),
        );
        let header_read_timeout = Duration::from_millis(
            self.server
                .header_read_timeout_ms
                .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_MS)
                .max(1),
        );
        let drain_delay =
            Duration::from_millis(self.server.drain_delay_ms.unwrap_or(DEFAULT_DRAIN_DELAY_MS));
        if self.auth.open == Some(true) && !self.auth.keys.is_empty() {
            return Err(
                "auth.open = true says Bridge serves without keys, but [[auth.keys]] are configured: remove one or the other"
                    .into(),
            );
        }
        let keys = Keys::new(keys);
        let limited = keys.any_limited() || models.values().any(|m| !m.quota.is_none());
        let admin = self.admin.as_ref().map(validate_admin).transpose()?;
        Ok(Registry {
            admin,
            public_metrics: self.server.metrics.unwrap_or(true),
            key_labels: keys.labels(),
            unrouted: Stats::new(key_labels),
            response_ids: previous.map_or_else(Default::default, |p| p.response_ids.clone()),
            extra_routes: models
                .values()
                .flat_map(|m| m.deployments.values())
                .flat_map(|d| d.extra_routes.iter().cloned())
                .collect(),
            listen,
            max_request_bytes,
            drain_timeout,
            drain_delay,
            body_read_timeout,
            header_read_timeout,
            half_close: self.server.half_close.unwrap_or(false),
            workers,
            keys,
            limits: LimitSettings::new(self.limits.as_ref())?,
            tracing: TraceSettings::new(self.tracing.as_ref())?,
            resolvers: resolvers(self.server.resolvers.as_deref())?,
            dns_status: Arc::default(),
            limited,
            created,
            models,
        })
    }
}

/// `[server] resolvers`: `ip:port` each (a DNS server's port is usually 53).
fn resolvers(list: Option<&[String]>) -> Result<Vec<SocketAddr>, String> {
    list.unwrap_or_default()
        .iter()
        .map(|r| {
            r.parse()
                .map_err(|_| format!("server.resolvers: '{r}' is not an ip:port address"))
        })
        .collect()
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
    let what = format!("model '{}'", model.id);
    Ok(Model {
        id: model.id.clone(),
        production,
        deployments,
        quota: Quota::new(&what, model.rpm, model.tpm, model.tpd, model.max_concurrent)?,
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
        Api::Openai => DEFAULT_HEALTH_PATH.to_string(),
        Api::Predict => String::new(),
    });
    let health = (!health_path.is_empty()).then(|| HealthCheck {
        interval: Duration::from_millis(
            d.health_interval_ms
                .unwrap_or(DEFAULT_HEALTH_INTERVAL_MS)
                .max(10),
        ),
        healthy_after: d.healthy_after.unwrap_or(DEFAULT_HEALTHY_AFTER).max(1),
        unhealthy_after: d.unhealthy_after.unwrap_or(DEFAULT_UNHEALTHY_AFTER).max(1),
    });
    if health.is_some() {
        for replica in &mut replicas {
            replica.health_uri = Some(replica.root_uri(&health_path)?);
        }
    }
    let wake = match d.wake_timeout_ms {
        None => None,
        Some(ms) => Some(Arc::new(Wake {
            timeout: Duration::from_millis(ms),
            url: d
                .wake_url
                .as_deref()
                .map(|u| u.parse::<Uri>().map_err(|e| format!("wake_url '{u}': {e}")))
                .transpose()?,
            max_parked: d.max_parked.unwrap_or(DEFAULT_MAX_PARKED),
            parked: Default::default(),
            called: Default::default(),
        })),
    };
    let (dns, balance, load_factor) =
        super::replicas::settings(d, health.is_some().then_some(health_path.as_str()))?;
    let predict = match (d.api, &d.predict) {
        (Api::Openai, Some(_)) => {
            return Err("a [predict] table applies only to api = \"predict\" deployments".into())
        }
        (Api::Openai, None) => None,
        (Api::Predict, config) => Some(super::predict::settings(config.as_ref())?),
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
                .unwrap_or(DEFAULT_FIRST_BYTE_MS)
                .max(1),
        ),
        connect_timeout: Duration::from_millis(
            d.timeouts.connect_ms.unwrap_or(DEFAULT_CONNECT_MS).max(1),
        ),
        idle_timeout: Duration::from_millis(d.timeouts.idle_ms.unwrap_or(DEFAULT_IDLE_MS).max(1)),
        total_timeout: d.timeouts.total_ms.map(Duration::from_millis),
        heartbeat: d
            .heartbeat_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis),
        inject_usage: d.inject_usage.unwrap_or(true),
        max_retries: d.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        eject_after: d.eject_after.unwrap_or(DEFAULT_EJECT_AFTER).max(1),
        retry_budget: Arc::default(),
        health,
        wake,
        ready: Arc::default(),
        limiter: d.max_concurrent.filter(|&n| n > 0).map(|n| {
            let wait =
                Duration::from_millis(d.queue_timeout_ms.unwrap_or(DEFAULT_QUEUE_TIMEOUT_MS));
            Arc::new(Limiter::new(
                n,
                d.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
                wait,
            ))
        }),
        reported_model: Arc::default(),
        stats: Arc::new(Stats::new(key_labels)),
        predict,
        extra_routes: check_extra_routes(&d.extra_routes)?,
        config: d.clone(),
        retiring: Default::default(),
        dns,
        newest: Arc::default(),
        balance,
        load_factor,
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
    let quota = Quota::new(&what, key.rpm, key.tpm, key.tpd, key.max_concurrent)?;
    Ok(ApiKey::new(&key.name, &secret, key.models.clone()).with_quota(quota))
}

//! The configuration file as written by operators.
//!
//! These serde types mirror the TOML one to one and reject unknown keys, so a typo is an error
//! naming the key, the file and the line rather than a setting silently ignored.
//! [`Config::validate`](crate::config::registry) turns them into the runtime [`Registry`](crate::config::registry::Registry).

use std::path::Path;

use serde::Deserialize;

pub use super::defaults::*;
pub use super::replicas::{Balance, Discovery};
pub use super::traces::TracingConfig;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    /// `[server]`: the client-facing listener.
    pub server: ServerConfig,
    #[serde(default)]
    /// `[auth]`: client keys.
    pub auth: AuthConfig,
    /// `[admin]`: the admin API, off unless the table is present.
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    /// `[[models]]`: what clients can route to.
    pub models: Vec<ModelConfig>,
    /// `[limits]`: where a fleet of Bridges keeps its shared counters.
    pub limits: Option<LimitsConfig>,
    /// `[tracing]`: OpenTelemetry traces, off unless `otlp_endpoint` is set.
    pub tracing: Option<TracingConfig>,
}

/// `[limits]`: the shared store of a fleet's limits. Absent: each instance counts alone. A
/// restart applies a change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Redis (or Valkey) URL, `redis://host:6379/0`.
    pub redis: Option<String>,
    /// Environment variable holding the Redis URL (it may hold a password).
    pub redis_env: Option<String>,
    /// Longest wait for a Redis answer, in milliseconds, before the instance enforces its
    /// share of the limits alone (it rejoins by itself). Default 5.
    pub redis_timeout_ms: Option<u64>,
}

/// `[admin]`: the admin API's own listener and keys (distinct from client keys).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default [`DEFAULT_ADMIN_LISTEN`].
    pub listen: Option<String>,
    /// `[[admin.keys]]`, same fields as client keys (`models` does not apply). Required unless
    /// the admin listener is on loopback.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// `[server]`: the client-facing listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it. Default [`DEFAULT_LISTEN`].
    pub listen: Option<String>,
    /// Largest request body accepted, in bytes; larger ones get 413 without being read.
    pub max_request_bytes: Option<u64>,
    /// Time allowed to receive a whole request body, in milliseconds (408 past it), so a
    /// client that stalls mid-body cannot hold a connection and its buffer. Default 60 000.
    pub body_read_timeout_ms: Option<u64>,
    /// Time allowed to receive a request's headers, in milliseconds; a slower client's
    /// connection is closed. Default 30 000.
    pub header_read_timeout_ms: Option<u64>,
    /// On SIGTERM/SIGINT, how long requests and streams in flight may run before their
    /// connections are closed, in milliseconds. Default 30 000.
    pub drain_timeout_ms: Option<u64>,
    /// On SIGTERM/SIGINT, how long Bridge keeps accepting new connections, with `/health`
    /// answering 503, before it stops accepting and drains: time for load balancers to take it
    /// out of rotation (Kubernetes: less than the pod's grace period). Default 0.
    pub drain_delay_ms: Option<u64>,
    /// Worker threads, each with its own event loop and upstream pool. Default: one per core.
    pub workers: Option<usize>,
    /// Serve `GET /metrics` on the client listener too (it names model ids, key names and
    /// replica addresses). With `false`, metrics are on the admin listener only. Default true.
    pub metrics: Option<bool>,
    /// Answer clients that half-close their side of the connection after sending a request
    /// (some tools and load balancers do). Off by default: the end of a client's input is then
    /// taken as a disconnect, and the engine request is cancelled at once; with half-close on,
    /// a client that disconnects is noticed only when Bridge next writes to it, so an abandoned
    /// non-streaming request runs to its end on the engine. TCP cannot tell the two apart.
    pub half_close: Option<bool>,
    /// Log lines as `text` (default) or `json` (one object per line, for log pipelines).
    pub log_format: Option<LogFormat>,
    /// DNS servers (`ip:port`) for `discovery = "dns"` deployments. Default: the system's
    /// (`/etc/resolv.conf`). A restart applies a change.
    pub resolvers: Option<Vec<String>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// `[auth]`: client keys. With none configured Bridge accepts every caller (and warns).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    /// `[[auth.keys]]`.
    pub keys: Vec<KeyConfig>,
    /// Serve without keys on purpose: allowed only with no keys. A reload that removes every
    /// key from a Bridge that had some is refused unless this says `true`.
    pub open: Option<bool>,
}

/// `[[auth.keys]]`: one client key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs and metrics in place of the key, which is never logged.
    pub name: String,
    /// The key itself, written in the file (prefer `key_env` or `key_file`).
    pub key: Option<String>,
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// File holding the key (surrounding whitespace ignored), e.g. a mounted secret.
    pub key_file: Option<String>,
    /// Model ids this key may use; absent means every model.
    pub models: Option<Vec<String>>,
    /// Requests per minute (a burst of this many, then this many a minute). Unset: none.
    pub rpm: Option<u64>,
    /// Tokens per minute, prompt and completion as the engine reports them. Unset: none.
    pub tpm: Option<u64>,
    /// Tokens per day: a budget refilled over 24 hours. Unset: none.
    pub tpd: Option<u64>,
    /// Requests in flight (streams count until they end). Unset: none.
    pub max_concurrent: Option<u64>,
}

/// `[[models]]`: a model that clients address as `baseten.model_id`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What clients name as `baseten.model_id`: URL-unreserved characters only.
    pub id: String,
    /// Deployment that serves when the client names none. May be omitted when the model has
    /// exactly one deployment.
    pub production: Option<String>,
    #[serde(default)]
    /// `[[models.deployments]]`.
    pub deployments: Vec<DeploymentConfig>,
    /// Limits for everyone's requests to this model together (a key's own limits apply too).
    /// Requests per minute (a burst of this many, then this many a minute). Unset: none.
    pub rpm: Option<u64>,
    /// Tokens per minute, prompt and completion as the engine reports them. Unset: none.
    pub tpm: Option<u64>,
    /// Tokens per day: a budget refilled over 24 hours. Unset: none.
    pub tpd: Option<u64>,
    /// Requests in flight to this model, from every key. Unset: none.
    pub max_concurrent: Option<u64>,
}

/// The protocol a deployment's replicas speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// An OpenAI-compatible engine (vLLM, SGLang, TGI, llama.cpp server): proxied as it is.
    #[default]
    Openai,
    /// A plain predict endpoint (JSON in, text or a raw text stream out), reached through the
    /// adapter in [`crate::engine::predict`]; each replica is the full predict URL.
    Predict,
}

impl Api {
    /// The name written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Predict => "predict",
        }
    }
}

/// `[[models.deployments]]`: one deployment of a model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// What clients name as `baseten.deployment_id`.
    pub id: String,
    #[serde(default)]
    /// What the replicas speak. Default `openai`.
    pub api: Api,
    /// For `openai`: base URLs ending where `/chat/completions` is appended (usually `/v1`).
    pub replicas: Vec<String>,
    /// `static` (default): the replicas as written. `dns`: every A/AAAA address of each
    /// replica's host is a replica, re-resolved every `dns_refresh_ms`.
    pub discovery: Option<Discovery>,
    /// How often DNS names are resolved again, in milliseconds (a shorter record TTL wins).
    /// Default 5 000.
    pub dns_refresh_ms: Option<u64>,
    /// `least_outstanding` (default) or `prefix`: a conversation's requests go to the replica
    /// that has its prompt cached, the same on every Bridge instance.
    pub balance: Option<Balance>,
    /// With `balance = "prefix"`: the most a replica may take, as a factor of the deployment's
    /// mean requests in flight, before its conversations spill to their next choice. Default 1.25.
    pub prefix_load_factor: Option<f64>,
    /// The engine's model name, used when a client routes with `model = "baseten/..."`.
    /// Unset: asked of the replica's `GET /models` once and cached.
    pub served_model: Option<String>,
    /// Environment variable with the engine's API key, sent as `Authorization: Bearer`.
    pub api_key_env: Option<String>,
    /// File with the engine's API key.
    pub api_key_file: Option<String>,
    /// Times a request that never reached an engine (connection refused or reset before it
    /// was written) is tried on another replica. Default 2.
    pub max_retries: Option<u32>,
    /// Consecutive failures (connect errors, broken connections, timeouts, 5xx) after which a
    /// replica gets no new work for a while (1 s, doubling up to 60 s). Default 5.
    pub eject_after: Option<u32>,
    /// For streams whose client did not ask for `stream_options.include_usage`, ask the engine
    /// for usage anyway (and remove the usage chunk before relaying), so tokens are counted for
    /// every stream. Turn off for engines that reject `stream_options`. Default true.
    pub inject_usage: Option<bool>,
    /// Send an SSE comment (`: ping`) on a stream after this many milliseconds of engine
    /// silence, so proxies and clients with idle timeouts keep long time-to-first-token streams
    /// open. Off by default: some clients break on comments.
    pub heartbeat_ms: Option<u64>,
    /// Cap on this deployment's requests in flight (streams count until they end). Unset: none.
    pub max_concurrent: Option<usize>,
    /// Requests that may wait for a slot when the cap is reached; more get 429. Default 0.
    pub max_queued: Option<usize>,
    /// Longest wait for a slot, in milliseconds (429 past it). Default 30 000.
    pub queue_timeout_ms: Option<u64>,
    /// Active health check path at each replica's server root (`http://host:8000/health` for a
    /// replica `http://host:8000/v1`). Default `/health` for `openai` deployments; `""` turns
    /// checks off.
    pub health_path: Option<String>,
    /// Milliseconds between health checks of each replica. Default 5 000.
    pub health_interval_ms: Option<u64>,
    /// Consecutive failed checks that mark a replica unhealthy (it gets no work). Default 2.
    pub unhealthy_after: Option<u32>,
    /// Consecutive passed checks that mark it healthy again (and end an ejection). Default 1.
    pub healthy_after: Option<u32>,
    /// Parking, for deployments that scale to zero: when no replica can take a request, wait up
    /// to this long for one to become healthy (then 503 with retry-after). Unset: 502 at once.
    pub wake_timeout_ms: Option<u64>,
    /// URL called (POST, once per wake-up) when a request parks, to start the deployment.
    pub wake_url: Option<String>,
    /// Requests that may be parked at once; more get 503 at once. Default 1 024.
    pub max_parked: Option<usize>,
    /// `[models.deployments.timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// `[models.deployments.predict]`: how the predict adapter talks to this model (only for
    /// `api = "predict"`).
    pub predict: Option<PredictConfig>,
    /// More engine routes this deployment's clients may call (`audio/speech`), beyond Bridge's
    /// own table: `POST /v1/direct/{route}` goes to `{replica}/{route}`, routed and answered
    /// as OpenAI's JSON routes are. Nothing else reaches the engine.
    #[serde(default)]
    pub extra_routes: Vec<String>,
}

/// Settings of the predict adapter for one deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictConfig {
    /// Key holding the text when the model answers with a JSON object (or streams SSE events
    /// that are objects). Default `output`.
    pub output_key: Option<String>,
    /// Renames of forwarded fields where the model expects other names, e.g.
    /// `{ max_tokens = "max_new_tokens" }`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// More request fields this model understands (e.g. `top_k`), forwarded as they are instead
    /// of being refused.
    #[serde(default)]
    pub extra_fields: Vec<String>,
    /// Most bytes of whole (non-stream) answers the adapter holds at once for this deployment,
    /// all requests together (each answer is read whole before it is adapted). Past it a
    /// request gets 503 with `retry-after`. Default 64 MiB.
    pub max_buffered_bytes: Option<u64>,
}

/// Per-deployment time limits, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Opening a TCP connection to a replica. Past it the replica counts as unreachable (the
    /// request may go to another replica). Default 5 000.
    pub connect_ms: Option<u64>,
    /// From sending the request to the engine's response headers. Non-streaming completions
    /// send headers only when the answer is complete, so the default is generous (600 000,
    /// the OpenAI SDK's own timeout). Past it: 504.
    pub first_byte_ms: Option<u64>,
    /// Longest silence between chunks once the answer began (streams and JSON bodies alike).
    /// Past it a stream ends with an in-band error, a JSON body is cut off. Default 300 000.
    pub idle_ms: Option<u64>,
    /// Whole request, first byte to last. Past it: 504 before the answer began, an in-band
    /// error (streams) or a cut-off body after. Default: no limit.
    pub total_ms: Option<u64>,
}

/// A configuration that could not be loaded; the message names the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or other source) the text came from.
    pub source_name: String,
    /// What is wrong, with the key and line when known.
    pub message: String,
}

impl Config {
    /// Whether any key is written in the file itself (`key = "..."`), so that the file is a
    /// secret to protect.
    pub fn has_literal_keys(&self) -> bool {
        let admin = self.admin.iter().flat_map(|a| &a.keys);
        self.auth.keys.iter().chain(admin).any(|k| k.key.is_some())
    }

    /// Reads and parses `path`. Syntax errors and unknown keys come with their line and column.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &name)
    }

    /// Parses TOML text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            source_name: name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let text =
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[[models]]\nid = \"m\"\nproduciton = \"x\"\n";
        let err = Config::parse(text, "bridge.toml").unwrap_err().to_string();
        assert!(err.starts_with("bridge.toml:"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("produciton"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
            [server]
            listen = "127.0.0.1:8080"
            [[auth.keys]]
            name = "team-a"
            key = "k"
            models = ["llama"]
            [[models]]
            id = "llama"
            production = "v2"
            [[models.deployments]]
            id = "v2"
            api = "openai"
            replicas = ["http://10.0.0.5:8000/v1"]
            served_model = "meta-llama/Llama-3.1-8B-Instruct"
            api_key_env = "VLLM_KEY"
        "#;
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.models[0].deployments[0].api, Api::Openai);
        assert_eq!(
            config.auth.keys[0].models.as_deref(),
            Some(&["llama".to_string()][..])
        );
    }
}

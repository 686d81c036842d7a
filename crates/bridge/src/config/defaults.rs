//! Every default of the configuration file, in one place: the field docs of
//! [`file`](super::file) name them, and validation applies them.

/// Default listen address: loopback, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener: loopback, next to the default client port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Default cap on a request body (long prompts and base64 images fit comfortably).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 << 20;
/// Time allowed to receive a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 60_000;
/// Time allowed to receive a request's headers (slow-loris clients are closed past it).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// How long requests in flight may run after a stop was requested.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// How long new connections are still accepted after a stop was requested.
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 0;
/// Time allowed to open a TCP connection to a replica.
pub const DEFAULT_CONNECT_MS: u64 = 5_000;
/// Time allowed for the engine's response headers: the OpenAI SDK's own 600 s timeout.
pub const DEFAULT_FIRST_BYTE_MS: u64 = 600_000;
/// Longest silence between response chunks.
pub const DEFAULT_IDLE_MS: u64 = 300_000;
/// Retries on other replicas for requests that never reached an engine.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Consecutive failures that eject a replica.
pub const DEFAULT_EJECT_AFTER: u32 = 5;
/// Active health check path of `openai` deployments (predict deployments: none).
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Milliseconds between health checks of each replica.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 5_000;
/// Consecutive passed checks that mark a replica healthy again.
pub const DEFAULT_HEALTHY_AFTER: u32 = 1;
/// Consecutive failed checks that mark a replica unhealthy.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 2;
/// Requests that may be parked at once while a deployment wakes.
pub const DEFAULT_MAX_PARKED: usize = 1024;
/// Longest wait for a concurrency slot.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 30_000;
/// Requests that may wait for a concurrency slot.
pub const DEFAULT_MAX_QUEUED: usize = 0;
/// Most bytes of whole predict answers held at once per deployment.
pub const DEFAULT_PREDICT_BUFFERED_BYTES: u64 = 64 << 20;
/// Key of the text in a predict model's object answer.
pub const DEFAULT_OUTPUT_KEY: &str = "output";
/// Longest wait for Redis before an instance enforces its limits alone (`[limits]`).
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 5;
/// How often a `discovery = "dns"` deployment's names are resolved again, in milliseconds.
pub const DEFAULT_DNS_REFRESH_MS: u64 = 5_000;
/// With `balance = "prefix"`: a replica's most requests in flight, as a factor of the mean.
pub const DEFAULT_PREFIX_LOAD_FACTOR: f64 = 1.25;
/// `service.name` of Bridge's spans (`[tracing]`).
pub const DEFAULT_SERVICE_NAME: &str = "bridge";
/// Longest an export to the trace collector may take, in milliseconds.
pub const DEFAULT_TRACE_EXPORT_TIMEOUT_MS: u64 = 10_000;
/// Spans waiting for export; more are dropped (and counted) rather than held in memory.
pub const DEFAULT_TRACE_QUEUE: usize = 8192;

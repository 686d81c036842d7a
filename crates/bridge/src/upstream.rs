//! Upstream: how Bridge reaches engines.
//!
//! - [`pool`]: keep-alive connections, one pool per worker, returned only when clean.
//! - [`conn`]: one connection, a request written on it and the response body read from it;
//!   [`wire`]: the HTTP/1.1 bytes of both (Bridge's own client, not hyper's).
//! - [`request`]: a request to an engine, its header lines already written.
//! - [`client`]: a request sent within its time limits, failures classified (retry-safe or
//!   not), and the header hygiene between client and engine.
//! - [`health`]: active health checks of every replica.
//! - [`discovery`]: the addresses behind DNS-discovered deployments, kept current.

pub mod client;
pub mod conn;
pub mod discovery;
pub mod health;
pub mod pool;
pub mod request;
pub mod wire;

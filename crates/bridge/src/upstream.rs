//! Upstream: how Bridge reaches engines.
//!
//! - [`pool`]: keep-alive connections, one pool per worker, returned only when clean.
//! - [`client`]: a request sent within its time limits, failures classified (retry-safe or
//!   not), and the header hygiene between client and engine.
//! - [`health`]: active health checks of every replica.
//! - [`discovery`]: the addresses behind DNS-discovered deployments, kept current.

pub mod client;
pub mod discovery;
pub mod health;
pub mod pool;

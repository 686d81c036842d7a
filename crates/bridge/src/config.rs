//! Configuration: the operator's file, its validated runtime form, and how it changes while
//! Bridge serves.
//!
//! - [`file`](mod@file): the TOML as written (serde, unknown keys refused); [`defaults`]: every default.
//! - [`validate`]: the file into a [`registry::Registry`], with errors naming the field.
//! - [`registry`]: the routing table requests are served against; [`endpoint`]: the routes.
//! - [`response_ids`]: which replica made which stored response (Responses API).
//! - [`replicas`]: DNS discovery of replicas, and the balancing choice; [`discovered`]: the
//!   addresses found made replicas of each new table.
//! - [`keys`]: client keys, kept as digests. [`quota`]: the limits of keys and models.
//! - [`traces`]: `[tracing]`, where spans are exported.
//! - [`state`]: replica load, health and limits.
//! - [`stats`]: what each deployment served, in atomics (read by `/metrics`).
//! - [`live`]: the table in force, swapped atomically on reload.

pub mod defaults;
pub mod discovered;
pub mod endpoint;
pub mod file;
pub mod keys;
pub mod live;
pub mod predict;
pub mod quota;
pub mod registry;
pub mod replicas;
pub mod response_ids;
pub mod state;
pub mod stats;
pub mod traces;
pub mod validate;

pub use file::*;

//! Bridge: one fast, OpenAI-compatible endpoint in front of self-hosted inference engines.
//!
//! # Layout
//!
//! The library is built in layers. A module uses only modules of its own layer or below, never
//! one above (a test in this file reads every `use crate::` line and fails the build otherwise):
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | 0. leaves | [`error`], [`headers`], [`body`], [`json`], [`sse`], [`observe::stats`], [`observe::usage`] | the error envelope, body types, the JSON and SSE grammars, counters |
//! | 1. config | [`config`] | the operator's file, its defaults, the validated [`config::registry`], replica state, keys, [`config::live`] reloads |
//! | 2. upstream, record | [`upstream`], [`observe::record`], [`observe::metrics`] | the pool and client to engines, health checks; what a request did, `/metrics` |
//! | 3. stages, relay | [`proxy`]'s stage modules, [`relay`] | authenticate, read, route, resolve, pick, send; the body a client receives |
//! | 4. adapters | [`dialect`], [`engine`] | the two axes: what the client speaks, what the deployment speaks |
//! | 5. pipeline | [`proxy`] (the module itself) | the stages run in order over one [`proxy::exchange::Exchange`] |
//! | 6. dispatch | [`dispatch`] | method and path → route; health and model list |
//! | 7. serving | [`server`], [`app`], [`admin`], [`sim`], [`demo`] | connections, workers, the admin API, the simulated engine |
//!
//! A forwarded request goes: [`server`] → [`dispatch`] → [`proxy`]: [`proxy::auth`] →
//! [`proxy::read`] → route (by the client's [`dialect`]) → [`proxy::resolve`] → adapt (by the
//! deployment's [`engine`] kind) → [`proxy::send`] (with [`proxy::pick`]) → the engine kind
//! relays the answer through [`relay`] → [`observe::record`] when the answer is over.
//!
//! [`app::App`] assembles it all; the binary (`main.rs`) only parses the command line, sets up
//! logging and signals, and calls it.

#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod headers;
pub mod json;
pub mod observe;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod sim;
pub mod sse;
pub mod upstream;

#[cfg(test)]
mod layers;

//! Bridge: one fast, OpenAI-compatible endpoint in front of self-hosted inference engines.
//!
//! # Layout
//!
//! The library is built in layers. A module uses only modules of its own layer or below, never
//! one above (a test in this file reads every `use crate::` line and fails the build otherwise):
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | 0. leaves | [`error`], [`headers`], [`body`], [`json`], [`sse`] | the error envelope and failure kinds, header names, body types, the JSON and SSE grammars |
//! | 1. config | [`config`] | the operator's file, its defaults, the validated [`config::registry`], replica state and stats, keys, [`config::live`] reloads |
//! | 2. upstream, fleet, observe | [`upstream`], [`fleet`], [`observe`] | the pool and client to engines, health checks; the fleet's limits (Redis); usage reading, what a request did, `/metrics` |
//! | 3. stages, relay | [`stage`], [`relay`] | authenticate, read, route, resolve, pick, send; the body a client receives |
//! | 4. adapters | [`dialect`], [`engine`] | the two axes: what the client speaks (OpenAI, Responses, Anthropic, audio forms), what the deployment speaks (OpenAI-compatible, predict) |
//! | 5. pipeline | [`proxy`] | the stages run in order over one [`stage::exchange::Exchange`] |
//! | 6. dispatch | [`dispatch`] | method and path → route; health and model list |
//! | 7. serving | [`server`], [`app`], [`admin`], [`sim`], [`demo`] | connections, workers, the admin API, the simulated engine |
//!
//! A forwarded request goes: [`server`] → [`dispatch`] → [`proxy`]: [`stage::auth`] →
//! [`stage::read`] → route (by the client's [`dialect`]) → [`stage::resolve`] → adapt (by the
//! deployment's [`engine`] kind) → [`stage::send`] (with [`stage::pick`]) → the engine kind
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
pub mod fleet;
pub mod headers;
pub mod json;
pub mod observe;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod sim;
pub mod sse;
pub mod stage;
pub mod upstream;

#[cfg(test)]
mod layers;

//! Engine kinds: what a deployment speaks, one file per kind.
//!
//! An engine kind turns the client's request into the engine's and the engine's answer into
//! the client's. An OpenAI-compatible engine ([`openai`]) is the identity: the body as sent
//! (minus the routing field), the answer relayed as it comes. A predict model ([`predict`])
//! gets a translated body, and its answers and text streams are turned into OpenAI objects.
//! [`crate::proxy`] picks the kind from the deployment's `api`, the one place that does.

pub mod openai;
pub mod predict;

use std::future::Future;

use bytes::Bytes;
use http::Response;

use crate::body::ReqBody;
use crate::config::registry::Endpoint;
use crate::error::ApiError;
use crate::relay::lifetime::EngineBody;
use crate::relay::ResBody;
use crate::stage::exchange::Exchange;
use crate::stage::route::RoutedBody;
use crate::upstream::client::Upstream;

/// The engine's side of a request.
pub struct Outgoing<P> {
    /// The body the engine gets.
    pub body: ReqBody,
    /// Where on the replica it goes.
    pub endpoint: Endpoint,
    /// What the answer needs to know about the request.
    pub plan: P,
}

/// How Bridge talks to one kind of engine.
pub trait Engine {
    /// What the answer needs to know about its request (set by [`Engine::request`]).
    type Plan: Send;

    /// The engine's request, from the client's `body` as routing scanned it.
    fn request(
        &self,
        upstream: &Upstream,
        ex: &Exchange,
        routed: &RoutedBody,
        body: &Bytes,
    ) -> impl Future<Output = Result<Outgoing<Self::Plan>, ApiError>> + Send;

    /// The client's response, from the engine's.
    fn response(
        &self,
        ex: &mut Exchange,
        answer: Response<EngineBody>,
        plan: Self::Plan,
    ) -> impl Future<Output = Result<Response<ResBody>, ApiError>> + Send;
}

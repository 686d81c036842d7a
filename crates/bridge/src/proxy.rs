//! The request pipeline for forwarded routes: authenticate → read → route → resolve → adapt →
//! send (pick, retry) → relay → record.
//!
//! Each stage is a module of [`crate::stage`]; they share one [`Exchange`] instead of long
//! parameter lists.
//! The client's dialect (chosen by route, [`crate::dialect::of`]) says where the routing is and
//! how streams, errors and usage look; the engine kind (chosen here, by the deployment's `api`)
//! adapts the request and the answer. Whatever happens, the request is recorded once its answer
//! is over (see [`crate::observe::record`]).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use http_body::Body;

use crate::body::BoxError;
use crate::config::replicas::Balance;
use crate::config::Api;
use crate::dialect;
use crate::engine::openai::OpenAiEngine;
use crate::engine::predict::PredictEngine;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::headers;
use crate::relay::ResBody;
use crate::stage::exchange::Exchange;
use crate::stage::route::RoutedBody;
use crate::stage::{admit, affinity, auth, read, resolve, send};
use crate::upstream::client::{upstream_headers, Upstream};

/// Forwards one request; the answer (or the error) carries Bridge's own time for it.
pub async fn forward<B>(
    upstream: &Upstream,
    mut ex: Box<Exchange>,
    parts: &Parts,
    body: B,
) -> Result<Response<ResBody>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match answer(upstream, &mut ex, parts, body).await {
        Ok(mut response) => {
            ex.record.set_status(response.status().as_u16());
            let overhead = ex.record.overhead().as_micros() as u64;
            response
                .headers_mut()
                .insert(headers::OVERHEAD, HeaderValue::from(overhead));
            if let Some(rates) = &ex.rates {
                admit::insert_rates(response.headers_mut(), rates);
            }
            match response.body_mut().engine_mut() {
                // The answer is still to be relayed: recorded when it is over.
                Some(body) => body.attach(ex.record),
                // Made whole in memory (a predict answer): over now.
                None => ex.record.settle(),
            }
            Ok(response)
        }
        Err(mut error) => {
            ex.record.set_status(error.status.as_u16());
            ex.record.settle();
            error.overhead_us = Some(ex.record.overhead().as_micros() as u64);
            // An admitted request that failed later still tells where its limits stand.
            if let (Some(rates), None) = (&ex.rates, &error.headers) {
                let mut headers = HeaderMap::new();
                admit::insert_rates(&mut headers, rates);
                error.headers = Some(Box::new(headers));
            }
            Err(error)
        }
    }
}

/// The stages from authentication to the response head. A client that leaves while this runs
/// drops it, and with it the engine request.
async fn answer<B>(
    upstream: &Upstream,
    ex: &mut Exchange,
    parts: &Parts,
    body: B,
) -> Result<Response<ResBody>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Borrows of the routing table (the caller, the deployment) and writes to the record are
    // of disjoint fields: no reference count is taken for either.
    let registry = &ex.registry;
    let dialect = dialect::of(ex.endpoint);
    let caller = auth::authenticate(&registry.keys, &parts.headers, dialect.takes_x_api_key())?;
    ex.record.set_key(caller.label());
    ex.key = caller.label();
    ex.owner = caller.owner();
    if ex.response_id.is_none() {
        read::check_content_type(&parts.headers, dialect.takes_form())?;
    }
    let body = read::read_body(
        body,
        &parts.headers,
        registry.max_request_bytes,
        registry.body_read_timeout,
    )
    .await?;
    // Ids made through another instance of the fleet are looked up in Redis first.
    let (routed, pin) = match ex.response_id.as_deref() {
        Some(id) => {
            ex.fleet.recall(&registry.response_ids, id).await;
            affinity::route_stored(registry, id, &ex.owner, &parts.headers)?
        }
        None => {
            let mut routed = dialect.route(&body, &parts.headers, ex.path_model.as_deref())?;
            if let Some(previous) = routed.previous_response_id(&body) {
                ex.fleet.recall(&registry.response_ids, &previous).await;
            }
            let pin = affinity::pin_previous(registry, &mut routed, &body, &ex.owner)?;
            (routed, pin)
        }
    };
    // A stored response stays reachable while its deployment drains.
    let stored = ex.response_id.is_some();
    let deployment = resolve::resolve(registry, caller, &routed.routing, stored)?;
    if let Some(route) = &ex.extra_route {
        if !deployment.extra_routes.contains(route) {
            return Err(ApiError::unknown_route(format!(
                "deployment '{}' of model '{}' does not allow the route '{route}'",
                deployment.id, deployment.model_id
            )));
        }
    }
    ex.pinned = match (
        pin.map(|base| affinity::replica_index(deployment, &base)),
        &ex.response_id,
    ) {
        (Some(None), Some(id)) => return Err(ApiError::response_not_found(id)),
        (pinned, _) => pinned.flatten(),
    };
    ex.record.set_deployment(deployment.clone());
    ex.deployment = Some(deployment.clone());
    if deployment.balance == Balance::Prefix {
        ex.affinity = routed.prefix.key(&body);
    }
    if let Some(trace) = ex.record.trace() {
        trace.request(routed.model(&body), routed.is_stream());
    }
    if registry.limited {
        let start = std::time::Instant::now();
        let admitted = admit::admit(&ex.fleet, registry, caller, deployment, &routed, &body);
        let admitted = admitted.await;
        if let Some(trace) = ex.record.trace() {
            trace.stage("admit", start);
        }
        if let Some(admission) = admitted? {
            ex.rates = Some(admission.rates);
            ex.record.admitted(admission);
        }
    }
    tracing::debug!(request_id = %String::from_utf8_lossy(ex.request_id.as_bytes()), key = caller.name(), model = %deployment.model_id, deployment = %deployment.id, "forwarding");
    let api = deployment.api;
    // The engine kind: the one place that decides it.
    match api {
        Api::Openai => {
            adapt_and_send(&OpenAiEngine, upstream, ex, &parts.headers, &routed, body).await
        }
        Api::Predict => {
            adapt_and_send(&PredictEngine, upstream, ex, &parts.headers, &routed, body).await
        }
    }
}

/// Adapt the request for `engine`, send it, and adapt the answer.
async fn adapt_and_send<E: Engine>(
    engine: &E,
    upstream: &Upstream,
    ex: &mut Exchange,
    client_headers: &HeaderMap,
    routed: &RoutedBody,
    body: Bytes,
) -> Result<Response<ResBody>, ApiError> {
    let outgoing = engine.request(upstream, ex, routed, &body).await?;
    drop(body);
    let engine_auth = ex
        .deployment
        .as_ref()
        .and_then(|d| d.upstream_auth.as_ref());
    let forward_only = std::mem::take(&mut ex.forward_only);
    let mut headers = upstream_headers(client_headers, forward_only, &ex.request_id, engine_auth);
    // A traced request's engine joins its trace under the engine span (`tracestate` passes
    // through as the client sent it); an untraced one passes the client's `traceparent` on.
    if let Some(traceparent) = ex.record.trace().and_then(|t| t.traceparent()) {
        headers.push(&headers::TRACEPARENT, &traceparent);
    }
    let answer = send::send(upstream, ex, outgoing.endpoint, headers, outgoing.body).await?;
    engine.response(ex, answer, outgoing.plan).await
}

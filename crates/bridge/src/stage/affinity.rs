//! Requests that must reach the replica holding their response (the Responses API's stored
//! responses live in the memory of the replica that made them).
//!
//! A stored response's routes (`responses/{id}`, `…/cancel`, `…/input_items`) are routed by the
//! id alone, from the map of ids Bridge learned while relaying, or by the routing headers when
//! Bridge never saw the id. A new response with `previous_response_id` goes where the previous
//! one was made. A key never reaches another key's response: to it, the id is unknown.

use http::HeaderMap;

use super::route::{from_headers, RoutedBody, Routing};
use crate::config::registry::{Deployment, Registry};
use crate::config::response_ids::Found;
use crate::error::ApiError;

/// How a stored response's route is routed, and the replica (by base URL) that holds it.
pub fn route_stored(
    registry: &Registry,
    id: &str,
    owner: &[u8; 32],
    headers: &HeaderMap,
) -> Result<(RoutedBody, Option<String>), ApiError> {
    match registry.response_ids.find(id, owner) {
        Found::Mine(made) => {
            let routing = Routing {
                model_id: made.model_id,
                deployment_id: Some(made.deployment_id),
                from_model_name: false,
            };
            Ok((RoutedBody::untouched(routing), Some(made.replica)))
        }
        // Engines do not check keys: another key's response must not be reached at all.
        Found::Theirs => Err(ApiError::response_not_found(id)),
        // With keys, an id Bridge does not know may be another key's (forgotten, or made
        // before a restart): only without authentication do the headers route it.
        Found::Unknown if *owner != [0; 32] => Err(ApiError::response_not_found(id)),
        Found::Unknown => match from_headers(headers) {
            Some(routing) => Ok((RoutedBody::untouched(routing?), None)),
            None => Err(ApiError::response_not_found(id)),
        },
    }
}

/// For a new response continuing a conversation (`previous_response_id` in `body`): the
/// replica (by base URL) that made the previous response, when this key made it for the same
/// model. Without a deployment named, the conversation stays on the deployment that made it.
pub fn pin_previous(
    registry: &Registry,
    routed: &mut RoutedBody,
    body: &[u8],
    owner: &[u8; 32],
) -> Result<Option<String>, ApiError> {
    let Some(previous) = routed.previous_response_id(body) else {
        return Ok(None);
    };
    let made = match registry.response_ids.find(&previous, owner) {
        Found::Mine(made) if made.model_id == routed.routing.model_id => made,
        Found::Mine(_) => return Ok(None),
        Found::Unknown if *owner == [0; 32] => return Ok(None),
        // Continuing another key's conversation would read it: refused as unknown (with keys,
        // an id Bridge does not know may be another key's).
        Found::Theirs | Found::Unknown => {
            return Err(ApiError::response_not_found(&previous).with_param("previous_response_id"))
        }
    };
    match &routed.routing.deployment_id {
        Some(named) if *named != made.deployment_id => return Ok(None),
        Some(_) => {}
        None => routed.routing.deployment_id = Some(made.deployment_id),
    }
    Ok(Some(made.replica))
}

/// The index of the replica at `base` in `deployment`, if it is still one of its replicas.
pub fn replica_index(deployment: &Deployment, base: &str) -> Option<usize> {
    deployment.replicas.iter().position(|r| r.base == base)
}

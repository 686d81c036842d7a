//! Resolve: the model and deployment a request names, and the engine's own model name.
//!
//! Without a `deployment_id` the model's production deployment serves. A model the caller's key
//! may not use is reported exactly like an unknown one, and a retiring deployment takes no new
//! requests (unless it became production again).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method};
use http_body_util::{BodyExt, Limited};

use super::pick::pick;
use super::route::Routing;
use crate::body::ReqBody;
use crate::config::keys::Caller;
use crate::config::registry::{Deployment, Endpoint, Registry};
use crate::error::ApiError;
use crate::upstream::client::Upstream;
use crate::upstream::request::{EngineRequest, HeaderLines};

/// Time allowed to ask a replica for its model name.
const MODEL_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds the deployment. A model the caller may not use is reported exactly like an unknown
/// one, so a key learns nothing about models outside its allow-list.
pub fn resolve<'r>(
    registry: &'r Registry,
    caller: Caller<'_>,
    routing: &Routing,
    retiring_too: bool,
) -> Result<&'r Arc<Deployment>, ApiError> {
    let model = registry
        .model(&routing.model_id)
        .filter(|_| caller.allows(&routing.model_id))
        .ok_or_else(|| {
            let e = ApiError::model_not_found(&routing.model_id);
            if routing.from_model_name {
                e.with_param("model")
            } else {
                e
            }
        })?;
    let deployment_id = routing
        .deployment_id
        .as_deref()
        .unwrap_or(&model.production);
    model
        .deployments
        .get(deployment_id)
        // A retiring deployment takes no new requests, unless it became production again.
        .filter(|d| retiring_too || d.id == model.production || !d.retiring.load(Ordering::Relaxed))
        .ok_or_else(|| {
            let e = ApiError::deployment_not_found(&model.id, deployment_id);
            if routing.from_model_name {
                e.with_param("model")
            } else {
                e
            }
        })
}

/// The engine's own model name, for requests routed by `model = "baseten/..."`: the configured
/// `served_model`, else what a replica reports at `GET /models` (asked once, then cached).
pub async fn served_model(
    upstream: &Upstream,
    deployment: &Deployment,
) -> Result<Arc<str>, ApiError> {
    if let Some(name) = &deployment.served_model {
        return Ok(Arc::from(name.as_str()));
    }
    if let Some(name) = deployment.reported_model.get() {
        return Ok(name.clone());
    }
    // Boxed: asked once per deployment, and its state would otherwise make every request's
    // future larger.
    let name = Box::pin(deployment.reported_model.get_or_try_init(|| async {
            // Never a replica that has not passed a check (any other, even unhealthy, may answer).
            let first_ready = deployment.replicas.iter().position(|r| !r.state.is_joining());
            let index = pick(deployment, &[], None).or(first_ready);
            let Some(replica) = index.and_then(|i| deployment.replicas.get(i)) else {
                return Err(ApiError::no_ready_replica(format!(
                    "deployment '{}' of model '{}' has no replica to ask its model name; set served_model for it",
                    deployment.id, deployment.model_id
                )));
            };
            let mut headers = HeaderLines::default();
            if let Some(auth) = &deployment.upstream_auth {
                headers.push(&header::AUTHORIZATION, auth);
            }
            let request = EngineRequest::new(Method::GET, replica.uri(Endpoint::Models), headers, ReqBody::empty());
            let lookup = async {
                let response = upstream.send(request, deployment.connect_timeout, MODEL_LOOKUP_TIMEOUT, std::time::Instant::now()).await?;
                let body = Limited::new(response.into_body(), 1 << 20).collect().await;
                let bytes = body.map(|c| c.to_bytes()).unwrap_or_default();
                let list: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                list["data"][0]["id"].as_str().map(Arc::<str>::from).ok_or_else(|| {
                    ApiError::bad_gateway(format!(
                        "the engine of deployment '{}' of model '{}' did not report a model name at /models; set served_model for it",
                        deployment.id, deployment.model_id
                    ))
                })
            };
            tokio::time::timeout(MODEL_LOOKUP_TIMEOUT, lookup).await.map_err(|_| {
                ApiError::gateway_timeout(format!(
                    "the engine of deployment '{}' of model '{}' did not list its models in time",
                    deployment.id, deployment.model_id
                ))
            })?
        }))
        .await?;
    Ok(name.clone())
}

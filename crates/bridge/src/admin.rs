//! The admin API, on its own listener: list deployments with their state, publish, promote
//! and retire them while traffic flows. Every change is an edit of the config file (see
//! [`edit`]), validated, written atomically and installed through [`Live`], so the file stays
//! the one source of truth and every instance reading it converges.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/models` | models, their deployments, replicas, health and load |
//! | `GET /v1/models/{model_id}` | one model |
//! | `GET /v1/models/{model_id}/deployments` | its deployments |
//! | `POST /v1/models/{model_id}/deployments` | publish (JSON with the file's deployment fields) |
//! | `POST /v1/models/{model_id}/deployments/{deployment_id}/promote` | make it production |
//! | `DELETE /v1/models/{model_id}/deployments/{deployment_id}[?drain=true]` | retire (with `drain`: no new requests, removed once idle) |

pub mod client;
pub mod edit;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::live::{Live, ReloadError};
use crate::config::registry::{Deployment, Model, Registry};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::headers::REQUEST_ID;
use crate::observe::trace::Traces;
use crate::relay::ResBody;
use crate::server;
use crate::stage::auth::authenticate;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1 << 20;
/// How often a draining deployment is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Longest wait for a draining deployment to go idle before it is removed anyway (its
/// requests in flight still finish: they hold the deployment).
const DRAIN_MAX: Duration = Duration::from_secs(3600);

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    fleet: Arc<Fleet>,
    traces: Option<Arc<Traces>>,
    draining: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) {
    let process = Arc::new((fleet, traces, draining));
    server::serve(
        listener,
        shutdown,
        server::DEFAULT_DRAIN_TIMEOUT,
        move |request| handle(live.clone(), process.clone(), request),
    )
    .await;
}

/// What the admin API reads of the process: the fleet, the traces, the draining flag.
type Process = (Arc<Fleet>, Option<Arc<Traces>>, Arc<AtomicBool>);

async fn handle(
    live: Arc<Live>,
    process: Arc<Process>,
    request: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let request_id = crate::dispatch::request_id(request.headers().get(REQUEST_ID));
    if request.uri().path() == "/metrics" && request.method() == Method::GET {
        // Prometheus scrapes the admin listener with an admin key (`authorization` in its
        // scrape config).
        let registry = live.load();
        let allowed = match &registry.admin {
            Some(admin) => authenticate(&admin.keys, request.headers(), false).map(|_| ()),
            None => Err(ApiError::unknown_route("the admin API is off")),
        };
        let mut response = match allowed {
            Ok(()) => {
                let (fleet, traces, draining) = &*process;
                let draining = draining.load(Ordering::Relaxed);
                crate::observe::metrics::response(&registry, fleet, traces.as_deref(), draining)
            }
            Err(error) => error.into_response(),
        };
        response.headers_mut().insert(REQUEST_ID, request_id);
        return Ok(response);
    }
    let mut response = match dispatch(&live, request).await {
        Ok((status, value)) => {
            let mut response = Response::new(ResBody::full(value.to_string()));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => error.into_response(),
    };
    response.headers_mut().insert(REQUEST_ID, request_id);
    Ok(response)
}

async fn dispatch(
    live: &Arc<Live>,
    request: Request<Incoming>,
) -> Result<(StatusCode, Value), ApiError> {
    let registry = live.load();
    let Some(admin) = &registry.admin else {
        return Err(ApiError::unknown_route("the admin API is off"));
    };
    // Client keys are not admin keys: only [[admin.keys]] open this API.
    authenticate(&admin.keys, request.headers(), false)?;
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_string();
    let drain = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "drain=true" || p == "drain=1"));
    let segments: Vec<&str> = match path.strip_prefix("/v1/models") {
        Some("") => Vec::new(),
        Some(rest) => rest.trim_start_matches('/').split('/').collect(),
        None => return Err(unknown(&method, &path)),
    };
    match (method.clone(), segments.as_slice()) {
        (Method::GET, []) => {
            let data: Vec<Value> = registry.models.values().map(|m| model_view(m)).collect();
            Ok((StatusCode::OK, json!({"object": "list", "data": data})))
        }
        (Method::GET, [model_id]) => Ok((StatusCode::OK, model_view(find(&registry, model_id)?))),
        (Method::GET, [model_id, "deployments"]) => {
            let model = find(&registry, model_id)?;
            let data: Vec<Value> = model
                .deployments
                .values()
                .map(|d| deployment_view(model, d))
                .collect();
            Ok((StatusCode::OK, json!({"object": "list", "data": data})))
        }
        (Method::POST, [model_id, "deployments"]) => {
            let spec = read_json(request).await?;
            let model_id = model_id.to_string();
            live.edit(|doc| edit::publish(doc, &model_id, &spec))
                .await?;
            let registry = live.load();
            let model = find(&registry, &model_id)?;
            let id = spec.get("id").and_then(Value::as_str).unwrap_or_default();
            let deployment = model.deployments.get(id).ok_or_else(|| {
                ApiError::internal("the published deployment is not in the new table")
            })?;
            Ok((StatusCode::CREATED, deployment_view(model, deployment)))
        }
        (Method::POST, [model_id, "deployments", deployment_id, "promote"]) => {
            let (model_id, deployment_id) = (model_id.to_string(), deployment_id.to_string());
            if let Ok(d) = deployment(&registry, &model_id, &deployment_id) {
                if d.retiring.load(Ordering::Relaxed) {
                    return Err(ApiError::conflict(format!(
                        "deployment '{deployment_id}' is being retired"
                    )));
                }
            }
            live.edit(|doc| edit::promote(doc, &model_id, &deployment_id))
                .await?;
            Ok((StatusCode::OK, model_view(find(&live.load(), &model_id)?)))
        }
        (Method::DELETE, [model_id, "deployments", deployment_id]) => {
            retire(live, &registry, model_id, deployment_id, drain).await
        }
        (_, [] | [_]) => Err(not_allowed(&method, &path, "GET")),
        (_, [_, "deployments"]) => Err(not_allowed(&method, &path, "GET, POST")),
        (_, [_, "deployments", _]) => Err(not_allowed(&method, &path, "DELETE")),
        (_, [_, "deployments", _, "promote"]) => Err(not_allowed(&method, &path, "POST")),
        _ => Err(unknown(&method, &path)),
    }
}

/// Retires a deployment at once, or, with `drain`, once it has no request in flight.
async fn retire(
    live: &Arc<Live>,
    registry: &Registry,
    model_id: &str,
    deployment_id: &str,
    drain: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let (model_id, deployment_id) = (model_id.to_string(), deployment_id.to_string());
    let target = deployment(registry, &model_id, &deployment_id)?.clone();
    if !drain {
        live.edit(|doc| edit::retire(doc, &model_id, &deployment_id))
            .await?;
        return Ok((
            StatusCode::OK,
            json!({"id": deployment_id, "model": model_id, "retired": true}),
        ));
    }
    // Check now that it may be retired at all (not production), without changing anything.
    let production = registry.model(&model_id).map(|m| m.production.clone());
    if production.as_deref() == Some(deployment_id.as_str()) {
        return Err(ApiError::conflict(format!(
            "'{deployment_id}' is the production deployment of model '{model_id}': promote another one first"
        )));
    }
    target.retiring.store(true, Ordering::Relaxed);
    let live = live.clone();
    let (m, d) = (model_id.clone(), deployment_id.clone());
    tokio::spawn(async move {
        let idle = async {
            while target.stats.in_flight.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_MAX, idle).await;
        match live.edit(|doc| edit::retire(doc, &m, &d)).await {
            Ok(()) => tracing::info!(model = %m, deployment = %d, "drained deployment retired"),
            Err(e) => {
                target.retiring.store(false, Ordering::Relaxed);
                tracing::error!(model = %m, deployment = %d, error = %e, "could not retire the drained deployment");
            }
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        json!({"id": deployment_id, "model": model_id, "retiring": true}),
    ))
}

fn not_allowed(method: &Method, path: &str, allow: &'static str) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {path}"), allow)
}

/// A change that could not be made, as the admin client sees it.
impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::Edit(e) => e,
            ReloadError::NoFile => ApiError::conflict(e.to_string()),
            ReloadError::Invalid(why) => {
                ApiError::bad_request(format!("the change would not validate: {why}"))
            }
            ReloadError::Read(_) | ReloadError::Parse(_) | ReloadError::Write(_) => {
                ApiError::internal(e.to_string())
            }
        }
    }
}

fn unknown(method: &Method, path: &str) -> ApiError {
    ApiError::unknown_route(format!("unknown admin route: {method} {path}"))
}

fn find<'r>(registry: &'r Registry, model_id: &str) -> Result<&'r Arc<Model>, ApiError> {
    registry
        .model(model_id)
        .ok_or_else(|| ApiError::model_not_found(model_id).with_param("model_id"))
}

fn deployment<'r>(
    registry: &'r Registry,
    model_id: &str,
    deployment_id: &str,
) -> Result<&'r Arc<Deployment>, ApiError> {
    find(registry, model_id)?
        .deployments
        .get(deployment_id)
        .ok_or_else(|| {
            ApiError::deployment_not_found(model_id, deployment_id).with_param("deployment_id")
        })
}

async fn read_json(request: Request<Incoming>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?
        .to_bytes();
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the body must be a JSON object (a deployment)",
        )),
        Err(e) => {
            Err(ApiError::bad_request(format!("invalid JSON: {e}")).with_code("invalid_json"))
        }
    }
}

fn model_view(model: &Model) -> Value {
    let deployments: Vec<Value> = model
        .deployments
        .values()
        .map(|d| deployment_view(model, d))
        .collect();
    json!({"id": model.id, "object": "model", "production": model.production, "deployments": deployments})
}

/// A deployment with its state, replica addresses included (operators only).
fn deployment_view(model: &Model, d: &Deployment) -> Value {
    let replicas: Vec<Value> = d.replicas.iter().map(|r| r.status(true)).collect();
    json!({
        "id": d.id,
        "api": d.api,
        "production": d.id == model.production,
        "retiring": d.retiring.load(Ordering::Relaxed),
        "in_flight": d.stats.in_flight.load(Ordering::Relaxed),
        "replicas": replicas,
    })
}

//! A small client for the admin API, and the `bridge deployments ...` commands built on it.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::body::ReqBody;
use crate::upstream::pool::Pool;
use crate::upstream::request::{EngineRequest, HeaderLines};
use clap::Subcommand;

/// Time allowed for one admin call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls `method path` on the admin API at `base` (e.g. `http://127.0.0.1:8081`). Returns the
/// status and the JSON answer, or a message saying what went wrong.
pub async fn call(
    base: &str,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("invalid admin URL '{base}': {e}"))?;
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut headers = HeaderLines::default();
    if body.is_some() {
        headers.push(
            &header::CONTENT_TYPE,
            &HeaderValue::from_static("application/json"),
        );
    }
    if let Some(key) = key {
        let value = HeaderValue::try_from(format!("Bearer {key}"))
            .map_err(|_| "the admin key has characters not allowed in a header".to_string())?;
        headers.push(&header::AUTHORIZATION, &value);
    }
    let request = EngineRequest::new(method, uri, headers, ReqBody::new([payload]));
    let exchange = async {
        let response = Pool::default()
            .send(request, CALL_TIMEOUT, std::time::Instant::now())
            .await
            .map_err(|e| format!("cannot reach the admin API at {base}: {e:?}"))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| format!("the admin API's answer broke off: {e}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the admin API at {base} did not answer in time"))?
}

/// The deployments of a model list (the admin API's `GET /v1/models`) as a table.
pub fn table(models: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<8} {:<10} {:<9} {:<9} {}\n",
        "MODEL", "DEPLOYMENT", "API", "PRODUCTION", "STATE", "HEALTHY", "IN FLIGHT"
    );
    let empty = Vec::new();
    for model in models["data"].as_array().unwrap_or(&empty) {
        for d in model["deployments"].as_array().unwrap_or(&empty) {
            let replicas = d["replicas"].as_array().unwrap_or(&empty);
            let healthy = replicas
                .iter()
                .filter(|r| r["healthy"] == true && r["ejected"] != true)
                .count();
            out.push_str(&format!(
                "{:<20} {:<16} {:<8} {:<10} {:<9} {:<9} {}\n",
                model["id"].as_str().unwrap_or("?"),
                d["id"].as_str().unwrap_or("?"),
                d["api"].as_str().unwrap_or("?"),
                if d["production"] == true { "yes" } else { "" },
                if d["retiring"] == true {
                    "retiring"
                } else {
                    "serving"
                },
                format!("{healthy}/{}", replicas.len()),
                d["in_flight"],
            ));
        }
    }
    out
}

/// `bridge deployments` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeploymentAction {
    /// Every model's deployments, with production, health and load.
    List,
    /// Publish a new deployment (created with its model as production when the model is new).
    Publish {
        #[arg(long)]
        /// The model to publish to.
        model: String,
        /// The deployment's id.
        #[arg(long)]
        id: String,
        /// Replica URL (repeat for several).
        #[arg(long = "replica", required = true)]
        replicas: Vec<String>,
        /// openai or predict.
        #[arg(long, default_value = "openai")]
        api: String,
        #[arg(long)]
        /// The engine's own model name, when clients route by model name.
        served_model: Option<String>,
        /// More deployment fields as a JSON object, e.g. '{"max_concurrent": 64}'.
        #[arg(long)]
        extra: Option<String>,
    },
    /// Make a deployment the model's production deployment.
    Promote {
        #[arg(long)]
        /// The model.
        model: String,
        #[arg(long)]
        /// The deployment to make production.
        id: String,
    },
    /// Retire a deployment that is not production.
    Retire {
        #[arg(long)]
        /// The model.
        model: String,
        #[arg(long)]
        /// The deployment to retire.
        id: String,
        /// Stop taking new requests now; remove it once its requests in flight are done.
        #[arg(long)]
        drain: bool,
    },
}

/// `bridge deployments ...`: one call to the admin API; its answer as text to print.
pub async fn run(
    admin: &str,
    key: Option<&str>,
    action: DeploymentAction,
) -> Result<String, String> {
    use http::Method;
    let (method, path, body) = match &action {
        DeploymentAction::List => (Method::GET, "/v1/models".to_string(), None),
        DeploymentAction::Publish {
            model,
            id,
            replicas,
            api,
            served_model,
            extra,
        } => {
            let mut spec = match extra {
                Some(text) => match serde_json::from_str(text) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => return Err("--extra must be a JSON object".into()),
                },
                None => serde_json::Map::new(),
            };
            spec.insert("id".into(), id.clone().into());
            spec.insert("api".into(), api.clone().into());
            spec.insert("replicas".into(), replicas.clone().into());
            if let Some(name) = served_model {
                spec.insert("served_model".into(), name.clone().into());
            }
            (
                Method::POST,
                format!("/v1/models/{model}/deployments"),
                Some(serde_json::Value::Object(spec)),
            )
        }
        DeploymentAction::Promote { model, id } => (
            Method::POST,
            format!("/v1/models/{model}/deployments/{id}/promote"),
            None,
        ),
        DeploymentAction::Retire { model, id, drain } => {
            let query = if *drain { "?drain=true" } else { "" };
            (
                Method::DELETE,
                format!("/v1/models/{model}/deployments/{id}{query}"),
                None,
            )
        }
    };
    let (status, answer) = call(admin, key, method, &path, body.as_ref()).await?;
    if !(200..300).contains(&status) {
        let message = answer["error"]["message"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_string);
        return Err(format!("{status}: {message}"));
    }
    Ok(match action {
        DeploymentAction::List => table(&answer),
        _ => format!("{answer}\n"),
    })
}

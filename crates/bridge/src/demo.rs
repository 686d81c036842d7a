//! The built-in demo model, served when Bridge starts without a config file.
//!
//! The demo goes through the real proxy path: the simulated engine ([`crate::sim`]) is started
//! in-process on a free loopback port and registered as the only replica of model `demo`,
//! deployment `demo-v1`, so the quick start works on a laptop with no GPU.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::registry::Registry;
use crate::config::{Api, Config, DeploymentConfig, ModelConfig};
use crate::sim::{self, SimConfig};

/// Model id of the demo model.
pub const DEMO_MODEL: &str = "demo";
/// Its production deployment.
pub const DEMO_DEPLOYMENT: &str = "demo-v1";
/// A demo model reached through the predict adapter.
pub const DEMO_PREDICT_MODEL: &str = "demo-predict";
/// The engine model name the demo replica reports.
pub const DEMO_SERVED_MODEL: &str = "bridge-demo";

/// Starts the demo engine and returns the registry that routes to it; the engine stops when
/// `shutdown` resolves.
pub async fn start(
    listen: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Registry> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let engine = SimConfig {
        model: DEMO_SERVED_MODEL.into(),
        chunks: 16,
        // A visible stream in the quick start, without making it slow.
        gap: Duration::from_millis(40),
        api_key: None,
    };
    tokio::spawn(sim::run(listener, engine, shutdown));
    let mut config = Config::default();
    config.server.listen = listen;
    config.models.push(ModelConfig {
        id: DEMO_MODEL.into(),
        production: Some(DEMO_DEPLOYMENT.into()),
        deployments: vec![DeploymentConfig {
            id: DEMO_DEPLOYMENT.into(),
            replicas: vec![format!("http://{addr}/v1")],
            served_model: Some(DEMO_SERVED_MODEL.into()),
            ..DeploymentConfig::default()
        }],
        ..ModelConfig::default()
    });
    // The same engine's predict mode: a model with only a plain predict API, via the adapter.
    config.models.push(ModelConfig {
        id: DEMO_PREDICT_MODEL.into(),
        production: None,
        deployments: vec![DeploymentConfig {
            id: "v1".into(),
            api: Api::Predict,
            replicas: vec![format!("http://{addr}/predict")],
            ..DeploymentConfig::default()
        }],
        ..ModelConfig::default()
    });
    config
        .validate("built-in demo config")
        .map_err(std::io::Error::other)
}

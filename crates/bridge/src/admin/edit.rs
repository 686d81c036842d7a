//! Changes to the config file made by the admin API, on the parsed document: only the entries
//! concerned are touched, so the operator's comments and layout stay as they were.

use serde_json::{Map, Value};
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table};

use crate::config::DeploymentConfig;
use crate::error::ApiError;

fn conflict(message: String) -> ApiError {
    ApiError::conflict(message)
}

fn models(doc: &mut DocumentMut) -> Option<&mut ArrayOfTables> {
    doc.get_mut("models")?.as_array_of_tables_mut()
}

fn id_of(table: &Table) -> Option<&str> {
    table.get("id")?.as_str()
}

fn model<'d>(doc: &'d mut DocumentMut, model_id: &str) -> Result<&'d mut Table, ApiError> {
    models(doc)
        .and_then(|m| m.iter_mut().find(|t| id_of(t) == Some(model_id)))
        .ok_or_else(|| ApiError::model_not_found(model_id).with_param("model_id"))
}

fn deployments(model: &mut Table) -> Option<&mut ArrayOfTables> {
    model.get_mut("deployments")?.as_array_of_tables_mut()
}

/// The production deployment as the file says it (explicitly, or the only one).
fn production(model: &mut Table) -> Option<String> {
    if let Some(p) = model.get("production").and_then(Item::as_str) {
        return Some(p.to_string());
    }
    let list = deployments(model)?;
    match list.len() {
        1 => list.get(0).and_then(id_of).map(str::to_string),
        _ => None,
    }
}

/// Adds a deployment to `model_id` (created, with it as production, when new). `spec` is the
/// deployment as JSON, with the same fields as in the file.
pub fn publish(
    doc: &mut DocumentMut,
    model_id: &str,
    spec: &Map<String, Value>,
) -> Result<(), ApiError> {
    let parsed: DeploymentConfig = serde_json::from_value(Value::Object(spec.clone()))
        .map_err(|e| ApiError::bad_request(format!("invalid deployment: {e}")))?;
    // The API must not choose which of the host's secrets are read and sent where: an engine
    // key is set by the operator, in the file.
    for field in ["api_key_env", "api_key_file"] {
        if spec.contains_key(field) {
            return Err(ApiError::bad_request(format!(
                "'{field}' cannot be set through the admin API: add the engine key to the config file"
            ))
            .with_param(field));
        }
    }
    let table = to_table(spec);
    let exists = models(doc).is_some_and(|m| m.iter().any(|t| id_of(t) == Some(model_id)));
    if !exists {
        let mut new_model = Table::new();
        new_model.insert("id", toml_edit::value(model_id));
        new_model.insert("production", toml_edit::value(parsed.id.as_str()));
        new_model.insert("deployments", Item::ArrayOfTables(ArrayOfTables::new()));
        match models(doc) {
            Some(list) => list.push(new_model),
            None => {
                let mut list = ArrayOfTables::new();
                list.push(new_model);
                doc.insert("models", Item::ArrayOfTables(list));
            }
        }
    }
    let model = model(doc, model_id)?;
    // A model that had one deployment and no explicit production keeps it as production.
    if model.get("production").is_none() {
        if let Some(only) = production(model) {
            model.insert("production", toml_edit::value(only));
        }
    }
    if model.get("deployments").is_none() {
        model.insert("deployments", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let list = deployments(model).ok_or_else(|| {
        ApiError::internal("'deployments' of the model is not an array of tables")
    })?;
    if list.iter().any(|t| id_of(t) == Some(parsed.id.as_str())) {
        return Err(conflict(format!(
            "model '{model_id}' already has a deployment '{}'; publish under a new id",
            parsed.id
        )));
    }
    list.push(table);
    Ok(())
}

/// Makes `deployment_id` the production deployment of `model_id`.
pub fn promote(doc: &mut DocumentMut, model_id: &str, deployment_id: &str) -> Result<(), ApiError> {
    let model = model(doc, model_id)?;
    let known =
        deployments(model).is_some_and(|l| l.iter().any(|t| id_of(t) == Some(deployment_id)));
    if !known {
        return Err(
            ApiError::deployment_not_found(model_id, deployment_id).with_param("deployment_id")
        );
    }
    model.insert("production", toml_edit::value(deployment_id));
    Ok(())
}

/// Removes `deployment_id` from `model_id`; never the production deployment.
pub fn retire(doc: &mut DocumentMut, model_id: &str, deployment_id: &str) -> Result<(), ApiError> {
    let model = model(doc, model_id)?;
    if production(model).as_deref() == Some(deployment_id) {
        return Err(conflict(format!(
            "'{deployment_id}' is the production deployment of model '{model_id}': promote another one first"
        )));
    }
    let list = deployments(model)
        .ok_or_else(|| ApiError::deployment_not_found(model_id, deployment_id))?;
    let index = list
        .iter()
        .position(|t| id_of(t) == Some(deployment_id))
        .ok_or_else(|| {
            ApiError::deployment_not_found(model_id, deployment_id).with_param("deployment_id")
        })?;
    list.remove(index);
    Ok(())
}

/// A deployment's JSON as a TOML table: nested objects become sub-tables (`timeouts`,
/// `predict`), deeper ones inline tables; nulls are left out.
fn to_table(spec: &Map<String, Value>) -> Table {
    let mut table = Table::new();
    for (key, value) in spec {
        match value {
            Value::Object(inner) => {
                let mut sub = Table::new();
                for (k, v) in inner {
                    if let Some(v) = to_value(v) {
                        sub.insert(k, Item::Value(v));
                    }
                }
                table.insert(key, Item::Table(sub));
            }
            other => {
                if let Some(v) = to_value(other) {
                    table.insert(key, Item::Value(v));
                }
            }
        }
    }
    table
}

fn to_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let array: toml_edit::Array = items.iter().filter_map(to_value).collect();
            array.into()
        }
        Value::Object(map) => {
            let mut inline = InlineTable::new();
            for (k, v) in map {
                if let Some(v) = to_value(v) {
                    inline.insert(k, v);
                }
            }
            inline.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const FILE: &str = "# Fleet config\n[[models]]\nid = \"llama\" # the big one\nproduction = \"v1\"\n\n[[models.deployments]]\nid = \"v1\"\nreplicas = [\"http://10.0.0.1:8000/v1\"] # rack A\n";

    #[test]
    fn publish_promote_retire_keep_comments() {
        let mut doc: DocumentMut = FILE.parse().unwrap_or_default();
        let spec = serde_json::json!({"id": "v2", "replicas": ["http://10.0.0.2:8000/v1"],
            "timeouts": {"first_byte_ms": 1000}});
        publish(&mut doc, "llama", spec.as_object().unwrap_or(&Map::new())).unwrap_or(());
        promote(&mut doc, "llama", "v2").unwrap_or(());
        let text = doc.to_string();
        assert!(
            text.contains("# Fleet config")
                && text.contains("# the big one")
                && text.contains("# rack A"),
            "{text}"
        );
        assert!(text.contains("production = \"v2\""), "{text}");
        assert!(text.contains("[models.deployments.timeouts]"), "{text}");
        retire(&mut doc, "llama", "v1").unwrap_or(());
        let config: crate::config::Config = toml::from_str(&doc.to_string()).unwrap_or_default();
        assert_eq!(config.models[0].deployments.len(), 1);
        assert_eq!(config.models[0].deployments[0].id, "v2");
        assert_eq!(
            config.models[0].deployments[0].timeouts.first_byte_ms,
            Some(1000)
        );
    }

    #[test]
    fn production_cannot_be_retired_and_ids_cannot_repeat() {
        let mut doc: DocumentMut = FILE.parse().unwrap_or_default();
        assert_eq!(
            retire(&mut doc, "llama", "v1").map_err(|e| e.status),
            Err(StatusCode::CONFLICT)
        );
        let spec = serde_json::json!({"id": "v1", "replicas": []});
        let again = publish(&mut doc, "llama", spec.as_object().unwrap_or(&Map::new()));
        assert_eq!(again.map_err(|e| e.status), Err(StatusCode::CONFLICT));
        let typo = serde_json::json!({"id": "v3", "replicaz": []});
        let bad = publish(&mut doc, "llama", typo.as_object().unwrap_or(&Map::new()));
        assert!(bad.is_err_and(|e| e.message.contains("replicaz")));
        assert_eq!(
            promote(&mut doc, "llama", "nope").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
    }
}

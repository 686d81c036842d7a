use super::*;
use crate::config::{Config, DEFAULT_LISTEN, DEFAULT_MAX_REQUEST_BYTES};

fn validate(text: &str) -> Result<Registry, String> {
    Config::parse(text, "t.toml")
        .and_then(|c| c.validate("t.toml"))
        .map_err(|e| e.to_string())
}

const ONE: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
replicas = ["http://127.0.0.1:9/v1/"]
"#;

#[test]
fn single_deployment_is_production_and_uris_are_built() {
    let registry = validate(ONE).unwrap();
    let model = registry.model("m").unwrap();
    assert_eq!(model.production, "d");
    let replica = &model.deployments["d"].replicas[0];
    assert_eq!(replica.base, "http://127.0.0.1:9/v1");
    assert_eq!(
        replica.uri(Endpoint::ChatCompletions),
        "http://127.0.0.1:9/v1/chat/completions"
    );
    assert_eq!(
        replica.uri(Endpoint::Models),
        "http://127.0.0.1:9/v1/models"
    );
    assert_eq!(registry.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(registry.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
}

#[test]
fn mistakes_are_named() {
    let cases = [
        (
            ONE.replace("\"d\"\nreplicas", "\"d\"\nreplicas = []\n#"),
            "has no replicas",
        ),
        (
            ONE.replace("http://127", "https://127"),
            "https upstreams are not supported",
        ),
        (
            ONE.replace("http://127.0.0.1:9/v1/", "ftp://x"),
            "must start with http://",
        ),
        (
            format!("{ONE}\n[[models.deployments]]\nid = \"e\"\nreplicas = [\"http://x/v1\"]"),
            "set production",
        ),
        (
            ONE.replace("id = \"m\"", "id = \"m\"\nproduction = \"zz\""),
            "'zz' is not among",
        ),
        (format!("{ONE}{ONE}"), "defined twice"),
        (
            ONE.replace("id = \"m\"", "id = \"a/b\""),
            "characters of A-Z",
        ),
        (
            format!("[server]\nlisten = \"nope\"\n{ONE}"),
            "server.listen",
        ),
        (
            format!("[[auth.keys]]\nname = \"a\"\n{ONE}"),
            "set one of key",
        ),
        (
            format!("[[auth.keys]]\nname = \"a\"\nkey = \"x\"\nkey_env = \"Y\"\n{ONE}"),
            "only one source",
        ),
        (
            format!("[[auth.keys]]\nname = \"a\"\nkey_env = \"BRIDGE_TEST_UNSET_VAR\"\n{ONE}"),
            "BRIDGE_TEST_UNSET_VAR is not set",
        ),
        (
            ONE.replace(
                "replicas",
                "api_key_env = \"BRIDGE_TEST_UNSET_VAR\"\nreplicas",
            ),
            "BRIDGE_TEST_UNSET_VAR is not set",
        ),
    ];
    for (text, want) in cases {
        let err = validate(&text).err().unwrap_or_default();
        assert!(err.contains(want), "want '{want}', got '{err}' for\n{text}");
        assert!(err.starts_with("t.toml: "), "{err}");
    }
}

#[test]
fn engine_key_from_file_becomes_bearer_header() {
    let dir = std::env::temp_dir().join(format!("bridge-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    std::fs::write(&path, "sk-engine\n").unwrap();
    let text = ONE.replace(
        "replicas",
        &format!("api_key_file = {:?}\nreplicas", path.display().to_string()),
    );
    let registry = validate(&text).unwrap();
    let auth = registry.model("m").unwrap().deployments["d"]
        .upstream_auth
        .clone()
        .unwrap();
    assert_eq!(auth, "Bearer sk-engine");
    assert!(auth.is_sensitive());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_reload_keeps_unchanged_deployments_but_not_a_rotated_engine_key() {
    let dir = std::env::temp_dir().join(format!("bridge-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("engine.key");
    std::fs::write(&key, "old-key").unwrap();
    let text = format!(
        "{ONE}api_key_file = \"{}\"\n[[models.deployments]]\nid = \"other\"\nreplicas = [\"http://127.0.0.1:9/v1\"]\n[[models]]\nid = \"n\"\n[[models.deployments]]\nid = \"x\"\nreplicas = [\"http://127.0.0.1:8/v1\"]\n",
        key.display()
    )
    .replace("id = \"m\"\n", "id = \"m\"\nproduction = \"d\"\n");
    let config = Config::parse(&text, "t.toml").unwrap();
    let first = config.validate("t.toml").unwrap();
    let again = config.validate_after("t.toml", Some(&first)).unwrap();
    let same = |r: &Registry, m: &str, d: &str| r.model(m).unwrap().deployments[d].clone();
    assert!(Arc::ptr_eq(
        &same(&first, "n", "x"),
        &same(&again, "n", "x")
    ));
    assert!(Arc::ptr_eq(
        &same(&first, "m", "d"),
        &same(&again, "m", "d")
    ));
    std::fs::write(&key, "new-key").unwrap();
    let rotated = config.validate_after("t.toml", Some(&again)).unwrap();
    let d = same(&rotated, "m", "d");
    assert!(
        !Arc::ptr_eq(&same(&again, "m", "d"), &d),
        "a rotated key must be read again"
    );
    assert_eq!(d.upstream_auth.as_ref().unwrap(), "Bearer new-key");
    // Its replicas keep their state all the same.
    assert!(Arc::ptr_eq(
        &same(&again, "m", "d").replicas[0].state,
        &d.replicas[0].state
    ));
    std::fs::remove_dir_all(dir).ok();
}

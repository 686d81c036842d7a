//! The `bridge` binary's contract: config errors name key, file and line; `--listen` wins over
//! the file; the simulator is labelled a test tool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bridge");

/// `text` as `bridge.toml` in a fresh directory, removed when the returned guard drops.
fn temp_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("bridge-cli-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs `bridge serve --config path`, which must fail, and returns what it printed on stderr.
fn failed_serve(path: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_config_key_is_an_error_naming_key_file_and_line() {
    let (_dir, path) = temp_config("[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 9\n");
    let err = failed_serve(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn invalid_config_values_are_errors_too() {
    let (_dir, path) = temp_config("[[models]]\nid = \"m\"\n");
    assert!(failed_serve(&path).contains("has no deployments"));
}

#[test]
fn listen_flag_overrides_the_config() {
    let (_dir, path) = temp_config("[server]\nlisten = \"127.0.0.1:1\"\n[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\nreplicas = [\"http://127.0.0.1:9/v1\"]\n",
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(!line.trim_end().ends_with(":1"), "{line}");
}

#[test]
fn simulator_is_labelled_a_test_tool() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("simulate") && help.contains("TEST TOOL"),
        "{help}"
    );
}

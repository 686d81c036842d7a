//! The operator's tools on real processes: `bridge check`, `bridge deployments ...`, and two
//! Bridge instances sharing one config file converging after an admin change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge::sim::SimConfig;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_bridge");

/// A `bridge serve` process; stopped when dropped.
struct Instance {
    child: Child,
    url: String,
    admin: String,
}

impl Instance {
    fn start(config: &std::path::Path) -> Instance {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |prefix: &str| {
            let line = lines.next().unwrap().unwrap();
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line}"))
                .to_string()
        };
        let url = next("listening on ");
        let admin = next("admin listening on ");
        Instance { child, url, admin }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("BRIDGE_ADMIN_KEY", "sk-admin")
        .output()
        .unwrap()
}

async fn answered_by(url: &str) -> String {
    let reply = post_with(
        &format!("{url}/v1/direct/chat/completions"),
        chat("m"),
        &[("authorization", "Bearer sk-client")],
    )
    .await;
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn two_instances_on_one_file_converge_after_a_cli_promotion() {
    let v1 = Sim::start_with(SimConfig {
        model: "engine-v1".into(),
        ..Default::default()
    })
    .await;
    let v2 = Sim::start_with(SimConfig {
        model: "engine-v2".into(),
        ..Default::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("bridge-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"ops\"\nkey = \"sk-admin\"\n\
             [[auth.keys]]\nname = \"client\"\nkey = \"sk-client\"\n\
             [[models]]\nid = \"m\"\nproduction = \"v1\"\n\
             [[models.deployments]]\nid = \"v1\"\nreplicas = [\"{}\"]\nhealth_path = \"\"\n\
             [[models.deployments]]\nid = \"v2\"\nreplicas = [\"{}\"]\nhealth_path = \"\"\n",
            v1.base(),
            v2.base()
        ),
    )
    .unwrap();
    let check = cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(check.status.success());
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(
        table.contains("deployment v1 [openai] (production)"),
        "{table}"
    );
    assert!(table.contains(&format!("replica {}", v2.base())), "{table}");

    let (a, b) = (Instance::start(&path), Instance::start(&path));
    assert!(answered_by(&b.url).await.contains("engine-v1"));
    let promoted = cli(&[
        "deployments",
        "--admin",
        &a.admin,
        "promote",
        "--model",
        "m",
        "--id",
        "v2",
    ]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    assert!(
        answered_by(&a.url).await.contains("engine-v2"),
        "the instance that made the change"
    );
    // The other instance sees the file change within its watch interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answered_by(&b.url).await.contains("engine-v2") {
        assert!(
            Instant::now() < deadline,
            "the second instance did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = cli(&["deployments", "--admin", &b.admin, "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    let v2_row = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("v2"))
        .unwrap_or_default();
    assert!(v2_row.contains("yes"), "{text}");

    let refused = cli(&[
        "deployments",
        "--admin",
        &a.admin,
        "retire",
        "--model",
        "m",
        "--id",
        "v2",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("409"));
    let unauthorised = Command::new(BIN)
        .args(["deployments", "--admin", &a.admin, "list"])
        .env_remove("BRIDGE_ADMIN_KEY")
        .output()
        .unwrap();
    assert!(!unauthorised.status.success());
    drop((a, b));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_refuses_an_invalid_config() {
    let dir = std::env::temp_dir().join(format!("bridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[models]]\nid = \"m\"\n").unwrap();
    let out = cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no deployments"));
    std::fs::remove_dir_all(dir).ok();
}

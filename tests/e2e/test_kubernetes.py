"""The Kubernetes kit, checked offline: the manifests validate strictly against Kubernetes'
own schemas (the PyPI package kubernetes-validate, which carries them), the ServiceMonitor has
the shape the Prometheus Operator reads, the ConfigMap's bridge.toml is a config `bridge check`
accepts, and the grace period covers its drain settings."""

import os
import pathlib
import subprocess
import tempfile
import tomllib

import yaml

from conftest import BRIDGE, ROOT

KUBE = ROOT / "deploy" / "kubernetes"
VALIDATE = ROOT / ".venv" / "bin" / "kubernetes-validate"


def documents(name):
    return [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]


def test_the_manifests_validate_strictly():
    for name in ("bridge.yaml", "engines.yaml"):
        done = subprocess.run([str(VALIDATE), "--strict", str(KUBE / name)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    # The validator can fail: an unknown field is refused.
    broken = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    deployment = next(d for d in documents("bridge.yaml") if d["kind"] == "Deployment")
    deployment["spec"]["replicaz"] = 3
    yaml.safe_dump(deployment, broken)
    broken.close()
    done = subprocess.run([str(VALIDATE), "--strict", broken.name], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0


def test_the_service_monitor_scrapes_the_bridge_service():
    (monitor,) = documents("servicemonitor.yaml")
    service = next(d for d in documents("bridge.yaml") if d["kind"] == "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]] and endpoint["path"] == "/metrics"


def test_the_config_map_is_a_valid_config_and_the_grace_period_covers_the_drain():
    docs = documents("bridge.yaml")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["bridge.toml"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(config)
    done = subprocess.run([BRIDGE, "check", "--config", str(path)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **secret})
    assert done.returncode == 0, done.stdout + done.stderr
    server = tomllib.loads(config)["server"]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    drain_s = (server["drain_delay_ms"] + server["drain_timeout_ms"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > drain_s
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True

"""The operations kit: the Prometheus rules pass `promtool check rules` and their unit tests
(`promtool test rules`, Debian's `prometheus` package), and every metric the rules and the
Grafana dashboard query is one a running Bridge exports."""

import json
import pathlib
import re
import subprocess
import tempfile

import httpx2 as httpx  # the HTTP client the OpenAI SDK itself uses
import yaml

from conftest import Process, closed_port_url

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "bridge-rules.yml"
NAME = re.compile(r"\b(bridge(?:_[a-z0-9]+)+|bridge:[a-z0-9_:]+)\b")


def test_the_rules_check_and_pass_their_unit_tests():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.with_name("bridge-rules.test.yml"))]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def exported_families() -> set:
    """Metric families a Bridge with limits shared through Redis exports (Redis unreachable
    here: its metrics are there all the same)."""
    redis = closed_port_url().replace("http://", "redis://").replace("/v1", "/0")
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[limits]\nredis = "{redis}"\n'
        f'[[models]]\nid = "m"\nrpm = 10\n[[models.deployments]]\nid = "d"\n'
        f'replicas = ["{closed_port_url()}"]\n'
    )
    bridge = Process("serve", "--config", str(path))
    try:
        text = httpx.get(f"{bridge.url}/metrics", timeout=10).text
    finally:
        bridge.stop()
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            families.add(name)
            if kind == "counter":
                families.add(name + "_total")
            if kind == "histogram":
                families.update(name + s for s in ("_bucket", "_sum", "_count"))
    return families


def test_every_queried_metric_is_exported():
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    queries = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "bridge-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert panels and all(p["targets"] for p in panels)
    queries += [t["expr"] for p in panels for t in p["targets"]]
    queries += [dashboard["templating"]["list"][1]["query"]["query"]]
    names = {n for q in queries for n in NAME.findall(q)}
    assert len(names) > 15
    known = exported_families() | recorded
    assert names - known == set(), f"queried but not exported: {sorted(names - known)}"

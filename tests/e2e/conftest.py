"""Fixtures for the end-to-end suite: real `bridge` processes driven by the official OpenAI SDK.

Every process binds 127.0.0.1 port 0, announces its address on stdout, and is stopped when the
session ends. `BRIDGE_BIN` points at the binary (scripts/test.sh builds it).
"""

import os
import pathlib
import re
import select
import shutil
import socket
import subprocess
import tempfile

import openai
import pytest


@pytest.fixture(scope="session", autouse=True)
def _scratch():
    """Every temporary file the suite makes (configs, logs, dnsmasq's hosts file) goes under one
    directory, removed when the session ends: runs leave nothing behind in /tmp."""
    root = tempfile.mkdtemp(prefix="bridge-e2e-")
    tempfile.tempdir = root
    yield
    tempfile.tempdir = None
    shutil.rmtree(root, ignore_errors=True)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BRIDGE = os.environ.get("BRIDGE_BIN", str(ROOT / "target" / "debug" / "bridge"))


class Process:
    """A `bridge` subcommand running in the background."""

    def __init__(self, *args: str, env: dict = None):
        self.log = tempfile.NamedTemporaryFile(prefix="bridge-e2e-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [BRIDGE, *args], stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(env or {})},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"{args} did not start: {line!r}\n{self.logs()}")
        self.url = match.group(1)

    def logs(self) -> str:
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)


# Sockets bound but never listening: connections to them are refused, and no later port-0 bind
# can be handed the same port while the session runs.
_RESERVED = []


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _RESERVED.append(s)
    return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(scope="session")
def bridge():
    """Bridge with model `llama` (deployments v1, v2 = production, slow, down) and `other`,
    backed by two simulated engines named after their deployments."""
    v1 = Process("simulate", "--listen", "127.0.0.1:0", "--model", "org/llama-v1", "--chunks", "6")
    v2 = Process("simulate", "--listen", "127.0.0.1:0", "--model", "org/llama-v2", "--chunks", "6")
    config = f"""
[server]
listen = "127.0.0.1:0"
max_request_bytes = 1048576

[[auth.keys]]
name = "e2e"
key = "sk-e2e"

[[auth.keys]]
name = "limited"
key = "sk-limited"
models = ["other"]

[[models]]
id = "llama"
production = "v2"

[[models.deployments]]
id = "v1"
replicas = ["{v1.url}/v1"]
served_model = "org/llama-v1"

[[models.deployments]]
id = "v2"
replicas = ["{v2.url}/v1"]

[[models.deployments]]
id = "slow"
replicas = ["{v1.url}/v1"]
[models.deployments.timeouts]
first_byte_ms = 300

[[models.deployments]]
id = "beating"
replicas = ["{v1.url}/v1"]
heartbeat_ms = 50

[[models.deployments]]
id = "pair"
replicas = ["{v1.url}/v1", "{v2.url}/v1"]

[[models.deployments]]
id = "down"
replicas = ["{closed_port_url()}"]

[[models]]
id = "legacy"
production = "raw"

[[models.deployments]]
id = "raw"
api = "predict"
replicas = ["{v1.url}/predict"]

[[models.deployments]]
id = "object"
api = "predict"
replicas = ["{v1.url}/predict/object"]

[[models.deployments]]
id = "sse"
api = "predict"
replicas = ["{v1.url}/predict/sse"]

[[models.deployments]]
id = "echo"
api = "predict"
replicas = ["{v1.url}/predict/echo"]
[models.deployments.predict]
rename = {{ max_tokens = "max_new_tokens" }}

[[models.deployments]]
id = "failing"
api = "predict"
replicas = ["{v1.url}/predict/error"]

[[models]]
id = "other"
[[models.deployments]]
id = "only"
replicas = ["{v1.url}/v1"]
"""
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(config)
    proxy = Process("serve", "--config", str(path))
    yield proxy
    for p in (proxy, v1, v2):
        p.stop()


@pytest.fixture
def client(bridge):
    # No SDK retries: every test sees exactly the answer Bridge gave.
    return openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="sk-e2e", max_retries=0)

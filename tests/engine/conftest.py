"""Fixtures for the real-engine suite: llama.cpp's `llama-server` (built by scripts/engine.sh)
serving a tiny generated model, and Bridge in front of it. Every process binds a free loopback
port and is stopped by PID when the session ends.

Environment: `LLAMA_SERVER` (the engine binary), `ENGINE_MODEL` (the tiny chat model's GGUF),
`ENGINE_EMBEDDER` (all-MiniLM-L6-v2's), `BRIDGE_BIN`.
"""

import os
import pathlib
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time

import httpx2 as httpx  # the HTTP client the OpenAI SDK itself uses
import pytest


@pytest.fixture(scope="session", autouse=True)
def _scratch():
    """Every temporary file the suite makes (Bridge's configs, the engine's logs) goes under one
    directory, removed when the session ends: runs leave nothing behind in /tmp."""
    root = tempfile.mkdtemp(prefix="bridge-engine-")
    tempfile.tempdir = root
    yield
    tempfile.tempdir = None
    shutil.rmtree(root, ignore_errors=True)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BRIDGE = os.environ.get("BRIDGE_BIN", str(ROOT / "target" / "debug" / "bridge"))
CONTEXT = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """A `llama-server` on a free loopback port, up once `/health` answers 200."""

    def __init__(self, *extra: str, model: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="engine-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [os.environ["LLAMA_SERVER"], "-m", model or os.environ["ENGINE_MODEL"], "--host", "127.0.0.1",
             "--port", str(self.port), "-c", str(CONTEXT * 2), "-np", "2", "--jinja",
             "--temp", "0", "--seed", "1", "--metrics", "--slots", *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.logs()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama-server did not start:\n{self.logs()}")

    def logs(self) -> str:
        return pathlib.Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=15)


class Bridge:
    """`bridge serve` with `config`."""

    def __init__(self, config: str):
        path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
        path.write_text(config)
        self.proc = subprocess.Popen(
            [BRIDGE, "serve", "--config", str(path)], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def bridge_config(*engines: Engine, embedder: Engine | None = None) -> str:
    replicas = ", ".join(f'"{e.url}/v1"' for e in engines)
    more = "" if embedder is None else f"""
[[models]]
id = "minilm"
[[models.deployments]]
id = "llama-cpp"
replicas = ["{embedder.url}/v1"]
"""
    return more + f"""
[server]
listen = "127.0.0.1:0"

[[models]]
id = "tiny"
[[models.deployments]]
id = "llama-cpp"
replicas = [{replicas}]
health_path = "/health"
health_interval_ms = 500
"""


@pytest.fixture(scope="session")
def engine():
    e = Engine()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def embedder():
    e = Engine("--embeddings", model=os.environ["ENGINE_EMBEDDER"])
    yield e
    e.stop()


@pytest.fixture(scope="session")
def bridge(engine, embedder):
    b = Bridge(bridge_config(engine, embedder=embedder))
    yield b
    b.stop()

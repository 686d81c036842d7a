"""A real Redis and fleets of `bridge` processes sharing it, for the limits tests.

`redis-server` comes from Debian's packages (scripts/e2e.sh installs it). Each server binds a
free loopback port, keeps nothing on disk, and is stopped by PID.
"""

import pathlib
import re
import socket
import subprocess
import tempfile
import time

import httpx2 as httpx  # the HTTP client the OpenAI SDK itself uses

from conftest import Process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A `redis-server` on a loopback port; `stop()` and `start()` again keep the port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def command(self, *args: str) -> bytes:
        """One command over the wire protocol, for what the tests look at in Redis."""
        request = f"*{len(args)}\r\n".encode()
        for a in args:
            request += f"${len(a.encode())}\r\n{a}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(request)
            return s.recv(65536)


def fleet_config(engine_url: str, redis_url: str, key_limits: str, model_limits: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:0"

[limits]
redis = "{redis_url}"
# These tests measure the shared counters' accuracy: the debug build of three Bridges, Redis and
# the client share two cores here, and Redis answers take up to ~10 ms, past the 5 ms default
# that would (rightly) send instances counting alone. Redis outages are tested by stopping it.
redis_timeout_ms = 50

[[auth.keys]]
name = "team-a"
key = "sk-team-a"
{key_limits}

[[auth.keys]]
name = "free"
key = "sk-free"

[[models]]
id = "llama"
{model_limits}
[[models.deployments]]
id = "v1"
replicas = ["{engine_url}/v1"]
served_model = "org/llama-v1"
"""


class Fleet:
    """`n` Bridges with one config, each up and joined to Redis."""

    def __init__(self, n: int, config: str):
        self.dir = pathlib.Path(tempfile.mkdtemp())
        path = self.dir / "bridge.toml"
        path.write_text(config)
        self.members = [Process("serve", "--config", str(path)) for _ in range(n)]
        for member in self.members:
            wait_for_metric(member.url, "bridge_limits_redis_up", 1)
        # Each has seen the others' heartbeats: its share, were Redis lost, is right.
        for member in self.members:
            wait_for_metric(member.url, "bridge_limits_fleet_instances", n)

    def urls(self) -> list:
        return [m.url for m in self.members]

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = None
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total = (total or 0) + float(m.group(2))
    return total if total is not None else float("nan")


def wait_for_metric(url: str, name: str, value: float, timeout: float = 20) -> float:
    """Seconds until `name` (summed over labels) at `url` equals `value`."""
    start = time.time()
    while time.time() - start < timeout:
        if metric(url, name) == value:
            return time.time() - start
        time.sleep(0.1)
    raise AssertionError(f"{name} at {url} is {metric(url, name)}, not {value}, after {timeout} s")

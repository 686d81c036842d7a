"""DNS discovery against a real DNS server (dnsmasq) and simulated engines on 127.0.0.x.

Each engine listens on its own loopback address and the same port, so one name's addresses
are the replicas, as a Kubernetes headless Service publishes pods. The tests change the
name's addresses under load and check what clients see: no failed request, new addresses
used once healthy, never before, old ones finishing what they have, and the last addresses
kept when DNS fails.
"""

import concurrent.futures
import pathlib
import re
import socket
import tempfile
import threading
import time

import httpx2 as httpx
import openai
import pytest

from conftest import Process
from dns import Dns

NAME = "engines.bridge.test"


def port_free_on(hosts) -> int:
    """A port free on every one of `hosts`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for host in hosts:
            with socket.socket() as t:
                try:
                    t.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port


class Engines:
    """Simulated engines on 127.0.0.2.. sharing one port; each names its own address as model."""

    def __init__(self, hosts, gap_ms=0):
        self.port = port_free_on(hosts)
        self.procs = {}
        for host in hosts:
            self.start(host, gap_ms)

    def start(self, host, gap_ms=0):
        self.procs[host] = Process("simulate", "--listen", f"{host}:{self.port}", "--model", host,
                                   "--chunks", "5", "--gap-ms", str(gap_ms))

    def stop(self):
        for p in self.procs.values():
            p.stop()


def config(dns: Dns, port: int, extra: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
resolvers = ["{dns.address}"]

[[models]]
id = "llama"
[[models.deployments]]
id = "v1"
replicas = ["http://{NAME}:{port}/v1"]
discovery = "dns"
dns_refresh_ms = 200
health_interval_ms = 200
{extra}
"""


def start_bridge(text: str):
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(text)
    return Process("serve", "--config", str(path)), path


def ask(url: str) -> str:
    """The address of the replica that answered."""
    r = httpx.post(f"{url}/v1/direct/chat/completions", timeout=10, json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "baseten": {"model_id": "llama"}})
    assert r.status_code == 200, r.text
    return answered_by(r.json()["choices"][0]["message"]["content"])


def answered_by(text: str):
    """The simulated engine names its `--model`, here its address, in its answer."""
    found = re.search(r"engine (127\.0\.0\.\d+)", text)
    return found and found.group(1)


def seen(url: str, n: int = 30) -> set:
    return {ask(url) for _ in range(n)}


def until(predicate, timeout=10, what=""):
    """Waits for `predicate`; an assertion failing inside it (a 503 while a replica is still
    joining) counts as not yet."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = predicate()
        except AssertionError as e:
            value, last = None, e
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last})")


class Load:
    """Requests in a loop from a few threads until stopped; every status is kept."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.statuses, self.stopping = url, [], threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                r = client.post(f"{self.url}/v1/direct/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "baseten": {"model_id": "llama"}})
                self.statuses.append((r.status_code, r.text[:200]))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()
        return self.statuses


@pytest.fixture
def dns():
    server = Dns()
    yield server
    server.stop()


def test_replicas_join_and_leave_under_load_with_no_failed_request(dns):
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    engines = Engines(hosts)
    dns.set(NAME, hosts[:2])
    bridge, _ = start_bridge(config(dns, engines.port))
    try:
        until(lambda: seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}, what="both first replicas")
        load = Load(bridge.url)
        dns.set(NAME, hosts)  # one joins
        until(lambda: "127.0.0.4" in seen(bridge.url), what="the new replica gets requests")
        dns.set(NAME, hosts[1:])  # one leaves
        until(lambda: seen(bridge.url) == {"127.0.0.3", "127.0.0.4"}, what="the replica left")
        statuses = load.stop()
        assert len(statuses) > 50
        assert [s for s in statuses if s[0] != 200] == []
        metrics = httpx.get(f"{bridge.url}/metrics").text
        replicas = set(re.findall(r'bridge_replica_healthy\{[^}]*replica="([^"]+)"', metrics))
        assert replicas == {f"http://127.0.0.3:{engines.port}/v1", f"http://127.0.0.4:{engines.port}/v1"}
        models = httpx.get(f"{bridge.url}/v1/direct/models").json()
        assert models["data"][0]["id"] == "llama"
    finally:
        bridge.stop()
        engines.stop()


def test_an_address_that_fails_its_health_check_never_gets_a_request(dns):
    engines = Engines(["127.0.0.2"])
    dns.set(NAME, ["127.0.0.2"])
    bridge, _ = start_bridge(config(dns, engines.port))
    try:
        until(lambda: seen(bridge.url, 5) == {"127.0.0.2"}, what="the first replica")
        # 127.0.0.5 has no engine: its checks fail, so it must never be tried.
        dns.set(NAME, ["127.0.0.2", "127.0.0.5"])
        metrics = lambda: httpx.get(f"{bridge.url}/metrics").text
        until(lambda: "127.0.0.5" in metrics(), what="the new address is known")
        for _ in range(40):
            assert ask(bridge.url) == "127.0.0.2"
        text = metrics()
        assert not re.search(r"bridge_upstream_errors_total\{[^}]*\} [1-9]", text), text
        assert re.search(r'bridge_replica_healthy\{[^}]*127\.0\.0\.5[^}]*\} 0', text)
        # The engine starts: the address joins.
        engines.start("127.0.0.5")
        until(lambda: "127.0.0.5" in seen(bridge.url), what="the address joins once healthy")
    finally:
        bridge.stop()
        engines.stop()


def test_a_stream_on_a_leaving_replica_finishes(dns):
    engines = Engines(["127.0.0.2", "127.0.0.3"], gap_ms=300)
    dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    bridge, _ = start_bridge(config(dns, engines.port))
    try:
        until(lambda: seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}, what="both replicas")
        client = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="none", max_retries=0)
        # Streams until one lands on 127.0.0.3, the one about to leave.
        for _ in range(20):
            stream = iter(client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_body={"baseten": {"model_id": "llama"}}))
            text, chunks = "", []
            while not answered_by(text):
                chunks.append(next(stream))
                text += chunks[-1].choices[0].delta.content or ""
            if answered_by(text) == "127.0.0.3":
                break
            list(stream)
        assert answered_by(text) == "127.0.0.3"
        dns.set(NAME, ["127.0.0.2"])
        until(lambda: seen(bridge.url, 10) == {"127.0.0.2"}, what="the replica left")
        rest = list(stream)  # the stream on the replica that left goes on to its end
        assert rest, "the stream was cut"
        assert [c for c in rest if c.choices and c.choices[0].finish_reason == "stop"]
    finally:
        bridge.stop()
        engines.stop()


def test_dns_failures_keep_the_last_addresses(dns):
    engines = Engines(["127.0.0.2", "127.0.0.3"])
    dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    bridge, _ = start_bridge(config(dns, engines.port))
    try:
        until(lambda: seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}, what="both replicas")
        # An empty answer (the name is gone: NXDOMAIN) keeps them.
        dns.names.clear()
        dns.set("other.bridge.test", ["127.0.0.9"])
        time.sleep(1)
        assert seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}
        # So does a DNS server that does not answer at all.
        dns.stop()
        time.sleep(1)
        assert seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}
        text = httpx.get(f"{bridge.url}/metrics").text
        failures = re.search(rf'bridge_dns_resolution_failures_total\{{name="{re.escape(NAME)}"\}} (\d+)', text)
        assert failures and int(failures.group(1)) >= 2, text
        assert bridge.logs().count("DNS resolution failed") == 1
        # Back, with one address: it is used again, and said once.
        dns.start()
        dns.set(NAME, ["127.0.0.3"])
        until(lambda: seen(bridge.url, 10) == {"127.0.0.3"}, timeout=15, what="DNS answers again")
        assert bridge.logs().count("DNS name resolves again") == 1
    finally:
        bridge.stop()
        engines.stop()


def test_a_reload_keeps_the_discovered_replicas_and_their_state(dns):
    engines = Engines(["127.0.0.2", "127.0.0.3"])
    dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    bridge, path = start_bridge(config(dns, engines.port))
    try:
        until(lambda: seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}, what="both replicas")
        path.write_text(config(dns, engines.port, "max_retries = 1\n"))
        until(lambda: "configuration reloaded" in bridge.logs(), what="the reload")
        # Straight after the reload, both discovered replicas serve (none had to join again).
        assert seen(bridge.url) == {"127.0.0.2", "127.0.0.3"}
    finally:
        bridge.stop()
        engines.stop()


def test_a_deployment_whose_name_has_no_address_yet_says_so(dns):
    engines = Engines(["127.0.0.2"])
    bridge, _ = start_bridge(config(dns, engines.port))
    try:
        r = httpx.post(f"{bridge.url}/v1/direct/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "baseten": {"model_id": "llama"}})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "no_ready_replica"
        assert "resolved to no address yet" in r.json()["error"]["message"]
        dns.set(NAME, ["127.0.0.2"])
        until(lambda: seen(bridge.url, 3) == {"127.0.0.2"}, what="the name resolves")
    finally:
        bridge.stop()
        engines.stop()


def test_a_request_parked_on_an_empty_deployment_is_served_by_the_addresses_that_appear(dns):
    engines = Engines(["127.0.0.2"])
    # Scaled to zero: the name has no address; requests park for up to 20 s.
    bridge, _ = start_bridge(config(dns, engines.port, "wake_timeout_ms = 20000\n"))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            parked = pool.submit(ask, bridge.url)
            time.sleep(1)
            assert not parked.done()
            dns.set(NAME, ["127.0.0.2"])  # the deployment wakes up
            assert parked.result(timeout=15) == "127.0.0.2"
    finally:
        bridge.stop()
        engines.stop()

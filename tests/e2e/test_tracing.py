"""OpenTelemetry traces, checked at a real OTLP/HTTP receiver that decodes the protobuf.

Each test runs a simulated engine that echoes the headers it received (so the `traceparent`
Bridge sends is seen), a Bridge exporting to the receiver, and the official OpenAI SDK as the
client. `OTEL_BSP_SCHEDULE_DELAY` (the SDK's standard variable) shortens the batch delay from
5 s so the tests wait less; nothing else differs from production.
"""

import json
import os
import pathlib
import re
import secrets
import tempfile
import time

import httpx2 as httpx
import openai
import pytest

from conftest import Process, closed_port_url
from otlp import Receiver

KEY = "sk-trace-secret-4242"
PROMPT = "the secret prompt words"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def config(engine_url: str, collector: str, ratio: float) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"

[tracing]
otlp_endpoint = "{collector}"
sample_ratio = {ratio}
service_name = "bridge-under-test"

[[auth.keys]]
name = "team-a"
key = "{KEY}"

[[models]]
id = "llama"
[[models.deployments]]
id = "v1"
replicas = ["{engine_url}/v1"]
"""


def start(engine, collector: str, ratio: float = 1.0) -> Process:
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(config(engine.url, collector, ratio))
    return Process("serve", "--config", str(path), env=FAST_EXPORT)


@pytest.fixture(scope="module")
def engine():
    engine = Process("simulate", "--listen", "127.0.0.1:0", "--model", "org/llama", "--chunks", "4")
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(engine, receiver):
    bridge = start(engine, receiver.url)
    yield bridge
    bridge.stop()


def sdk(bridge, headers=None):
    return openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key=KEY, max_retries=0,
                         default_headers=headers or {})


def echoed_headers(completion_text: str) -> dict:
    return json.loads(completion_text)["headers"]


def spans_counted(bridge, outcome: str) -> int:
    text = httpx.get(f"{bridge.url}/metrics", timeout=5).text
    found = re.search(rf'^bridge_trace_spans_total\{{outcome="{outcome}"\}} (\d+)$', text, re.M)
    assert found, text
    return int(found.group(1))


def traceparent():
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id


def test_a_stream_makes_the_span_tree_with_genai_attributes(traced, receiver):
    trace_id, parent = traceparent()
    client = sdk(traced, {"traceparent": f"00-{trace_id}-{parent}-01"})
    stream = client.chat.completions.create(
        model="org/llama", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}, max_tokens=50,
        extra_body={"baseten": {"model_id": "llama"}},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    spans = receiver.trace(trace_id, 4)
    by_name = {s.name: s for s in spans}
    root = by_name["chat org/llama"]
    assert root.kind == "SPAN_KIND_SERVER"
    assert root.parent_id == parent  # the caller's span
    assert root.resource["service.name"] == "bridge-under-test"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "org/llama"
    assert a["gen_ai.usage.input_tokens"] == chunks[-1].usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens
    assert a["bridge.model_id"] == "llama" and a["bridge.deployment"] == "v1"
    assert a["bridge.key"] == "team-a"
    assert a["bridge.replica"].startswith("http://127.0.0.1:")
    assert a["bridge.stream"] is True
    assert a["http.response.status_code"] == 200
    assert root.status == "STATUS_CODE_UNSET"

    engine_span = by_name["engine"]
    assert engine_span.kind == "SPAN_KIND_CLIENT" and engine_span.parent_id == root.span_id
    assert engine_span.attributes["bridge.attempts"] == 1
    assert engine_span.attributes["server.address"] == "127.0.0.1"
    for child in ("first byte", "stream"):
        assert by_name[child].parent_id == engine_span.span_id, child
    stream_span = by_name["stream"]
    assert [e[0] for e in stream_span.events] == ["first token"]
    # Intervals nest, in order: the request holds the engine span, which holds the stages.
    assert root.start <= engine_span.start <= by_name["first byte"].start
    assert by_name["first byte"].end <= stream_span.start + 1_000
    assert stream_span.end <= root.end + 1_000 and engine_span.end <= root.end + 1_000
    # Neither the key nor the prompt is ever exported.
    raw = b"".join(receiver.raw)
    assert KEY.encode() not in raw and PROMPT.encode() not in raw


def test_the_engine_joins_the_trace_under_the_engine_span(traced, receiver):
    trace_id, parent = traceparent()
    client = sdk(traced, {"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=abc"})
    completion = client.chat.completions.create(
        model="org/llama", messages=[{"role": "user", "content": "hi"}],
        extra_body={"baseten": {"model_id": "llama"}, "simulate": {"echo": True}},
    )
    headers = echoed_headers(completion.choices[0].message.content)
    spans = receiver.trace(trace_id, 4)
    engine_span = next(s for s in spans if s.name == "engine")
    assert headers["traceparent"] == f"00-{trace_id}-{engine_span.span_id}-01"
    assert headers["tracestate"] == "vendor=abc"
    root = next(s for s in spans if s.kind == "SPAN_KIND_SERVER")
    assert root.trace_state == "vendor=abc"
    # A JSON answer's body span is named for what it is.
    assert any(s.name == "response body" for s in spans)


def test_a_new_connection_is_a_connect_span(engine, receiver):
    bridge = start(engine, receiver.url)  # a fresh pool: the first request connects
    try:
        trace_id, parent = traceparent()
        sdk(bridge, {"traceparent": f"00-{trace_id}-{parent}-01"}).embeddings.create(
            model="org/llama", input="x", extra_body={"baseten": {"model_id": "llama"}})
        spans = receiver.trace(trace_id, 5)
        by_name = {s.name: s for s in spans}
        root = next(s for s in spans if s.kind == "SPAN_KIND_SERVER")
        assert root.name == "embeddings org/llama"
        connect = by_name["connect"]
        assert connect.parent_id == by_name["engine"].span_id
        assert connect.end <= by_name["first byte"].start + 1_000
    finally:
        bridge.stop()


def test_an_engine_error_marks_the_spans(traced, receiver):
    trace_id, parent = traceparent()
    client = sdk(traced, {"traceparent": f"00-{trace_id}-{parent}-01"})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="org/llama", messages=[{"role": "user", "content": "hi"}],
            extra_body={"baseten": {"model_id": "llama"}, "simulate": {"status": 500}},
        )
    spans = receiver.trace(trace_id, 3)
    root = next(s for s in spans if s.kind == "SPAN_KIND_SERVER")
    assert root.status == "STATUS_CODE_ERROR"
    assert root.attributes["error.type"] == "500"
    assert root.attributes["http.response.status_code"] == 500


def test_sampling_is_parent_based(engine, receiver):
    bridge = start(engine, receiver.url, ratio=0.0)
    try:
        ask = lambda headers: sdk(bridge, headers).chat.completions.create(
            model="org/llama", messages=[{"role": "user", "content": "hi"}],
            extra_body={"baseten": {"model_id": "llama"}, "simulate": {"echo": True}},
        ).choices[0].message.content
        # A sampled caller is always kept, even at ratio 0.
        kept, parent = traceparent()
        ask({"traceparent": f"00-{kept}-{parent}-01"})
        kept_spans = receiver.trace(kept, 4)
        # An unsampled caller is not traced, and its traceparent reaches the engine unchanged.
        dropped, parent = traceparent()
        sent = f"00-{dropped}-{parent}-00"
        assert echoed_headers(ask({"traceparent": sent}))["traceparent"] == sent
        # A root request at ratio 0 is not traced, and the engine gets no traceparent.
        assert "traceparent" not in echoed_headers(ask({}))
        # A malformed traceparent is ignored: a root request.
        assert echoed_headers(ask({"traceparent": "garbage"}))["traceparent"] == "garbage"
        time.sleep(1)  # several export rounds
        assert not [s for s in receiver.spans if s.trace_id == dropped]
        # Only the sampled caller's request made spans.
        assert spans_counted(bridge, "exported") == len(kept_spans)
    finally:
        bridge.stop()


def test_ratio_keeps_about_its_share_of_root_requests(engine, receiver):
    bridge = start(engine, receiver.url, ratio=0.5)
    try:
        before = {s.trace_id for s in receiver.spans}
        client = sdk(bridge)
        for _ in range(120):
            client.embeddings.create(model="org/llama", input="x",
                                     extra_body={"baseten": {"model_id": "llama"}})
        time.sleep(1)  # several export rounds
        roots = {s.trace_id for s in receiver.spans if s.kind == "SPAN_KIND_SERVER"} - before
        assert 30 <= len(roots) <= 90, len(roots)
    finally:
        bridge.stop()


def test_an_unreachable_collector_costs_a_log_line_and_a_counter(engine):
    bridge = start(engine, closed_port_url())
    try:
        client = sdk(bridge)
        for _ in range(20):
            answer = client.chat.completions.create(
                model="org/llama", messages=[{"role": "user", "content": "hi"}],
                extra_body={"baseten": {"model_id": "llama"}})
            assert answer.choices[0].message.content
        deadline = time.time() + 15
        while time.time() < deadline and spans_counted(bridge, "failed") == 0:
            time.sleep(0.1)
        assert spans_counted(bridge, "failed") > 0
        assert spans_counted(bridge, "exported") == 0
        assert bridge.logs().count("cannot export traces") == 1
    finally:
        bridge.stop()

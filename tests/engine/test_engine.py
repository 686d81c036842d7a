"""A real engine: llama.cpp's `llama-server` with a tiny model, reached directly and through
Bridge with the official SDKs. At temperature 0 the same request gives the same answer both
ways; errors arrive in each SDK's own class; a client that leaves stops the generation; a
replica killed under load costs only the requests it held."""

import subprocess
import threading
import time

import anthropic
import httpx2 as httpx
import openai
import pytest

from conftest import CONTEXT, ROOT, Bridge, Engine, bridge_config

ROUTE = {"baseten": {"model_id": "tiny"}}
ASK = dict(model="tiny", messages=[{"role": "user", "content": "hello there"}], max_tokens=12, temperature=0)


def clients(engine, bridge):
    direct = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)
    through = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="unused", max_retries=0)
    return direct, through


def test_chat_is_the_same_through_bridge(engine, bridge):
    direct, through = clients(engine, bridge)
    a = direct.chat.completions.create(**ASK)
    b = through.chat.completions.create(**ASK, extra_body=ROUTE)
    assert a.choices[0].message.content and a.choices[0].message.content == b.choices[0].message.content
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (b.usage.prompt_tokens, b.usage.completion_tokens)


def test_chat_streams_are_the_same_through_bridge(engine, bridge):
    direct, through = clients(engine, bridge)

    def text(stream):
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    a = text(direct.chat.completions.create(**ASK, stream=True))
    b = text(through.chat.completions.create(**ASK, stream=True, extra_body=ROUTE))
    assert a and a == b
    # Usage asked for by the client arrives, as the engine counted it.
    chunks = list(through.chat.completions.create(
        **ASK, stream=True, stream_options={"include_usage": True}, extra_body=ROUTE))
    assert chunks[-1].usage.completion_tokens == 12


def test_completions_are_the_same_through_bridge(engine, bridge):
    direct, through = clients(engine, bridge)
    ask = dict(model="tiny", prompt="the bridge is", max_tokens=8, temperature=0)
    a = direct.completions.create(**ask)
    b = through.completions.create(**ask, extra_body=ROUTE)
    assert a.choices[0].text and a.choices[0].text == b.choices[0].text
    streamed = "".join(c.choices[0].text for c in through.completions.create(**ask, stream=True, extra_body=ROUTE) if c.choices)
    assert streamed == a.choices[0].text


def test_responses_api_is_the_same_through_bridge(engine, bridge):
    direct, through = clients(engine, bridge)
    ask = dict(model="tiny", input="hello there", max_output_tokens=12, temperature=0)
    a = direct.responses.create(**ask)
    b = through.responses.create(**ask, extra_body=ROUTE)
    assert a.output_text and a.output_text == b.output_text
    events = [e.type for e in through.responses.create(**ask, stream=True, extra_body=ROUTE)]
    assert events[0] == "response.created" and events[-1] == "response.completed"


def test_anthropic_messages_are_the_same_through_bridge(engine, bridge):
    # The server samples at temperature 0 (--temp 0); this SDK version has no temperature.
    ask = dict(model="tiny", max_tokens=12, messages=[{"role": "user", "content": "hello there"}])
    a = anthropic.Anthropic(base_url=engine.url, api_key="unused", max_retries=0).messages.create(**ask)
    through = anthropic.Anthropic(base_url=bridge.url, api_key="unused", max_retries=0)
    b = through.messages.create(**ask, extra_body=ROUTE)
    assert a.content[0].text and a.content[0].text == b.content[0].text
    assert a.usage.output_tokens == b.usage.output_tokens
    with through.messages.stream(**ask, extra_body=ROUTE) as stream:
        assert stream.get_final_text() == a.content[0].text


def test_tokenize_is_the_same_through_bridge(engine, bridge):
    body = {"content": "hello there bridge", **ROUTE}
    a = httpx.post(f"{engine.url}/tokenize", json={"content": "hello there bridge"}, timeout=30).json()
    b = httpx.post(f"{bridge.url}/v1/direct/tokenize", json=body, timeout=30)
    assert b.status_code == 200, b.text
    assert a["tokens"] and a["tokens"] == b.json()["tokens"]


def test_a_prompt_over_the_context_is_each_sdks_error(engine, bridge):
    direct, through = clients(engine, bridge)
    long = " ".join(["hello"] * (CONTEXT * 4))
    ask = dict(model="tiny", messages=[{"role": "user", "content": long}], max_tokens=4)
    with pytest.raises(openai.BadRequestError) as a:
        direct.chat.completions.create(**ask)
    with pytest.raises(openai.BadRequestError) as b:
        through.chat.completions.create(**ask, extra_body=ROUTE)
    assert a.value.status_code == b.value.status_code == 400
    assert "context" in str(b.value.message)
    claude = anthropic.Anthropic(base_url=bridge.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": long}], extra_body=ROUTE)
    # The official Node SDK too (the package tests/e2e-node pins).
    script = ROOT / "tests" / "e2e-node" / "engine-error.mjs"
    for words, said in [(CONTEXT * 4, "BadRequestError 400"), (3, "ok")]:
        done = subprocess.run(["node", str(script), f"{bridge.url}/v1/direct", "tiny", str(words)],
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == said, done.stdout + done.stderr


def processing(engine) -> int:
    return sum(s["is_processing"] for s in httpx.get(f"{engine.url}/slots", timeout=5).json())


def test_a_client_that_leaves_stops_the_generation(engine, bridge):
    _, through = clients(engine, bridge)
    # A long answer (nearly the whole context), read a little, then left.
    long = {**ASK, "max_tokens": CONTEXT * 2 - 40}
    # The tiny model can finish the whole answer before the test looks at the engine (on a
    # loaded machine, between the first chunk and the look): such a try proves nothing, so
    # the test tries again until it sees the engine generating for the client it then leaves.
    for _ in range(5):
        stream = through.chat.completions.create(**long, stream=True, extra_body=ROUTE)
        next(iter(stream))
        if processing(engine) == 1:
            break
        stream.close()
    else:
        pytest.fail("the engine was never seen generating after the first chunk")
    stream.close()
    deadline = time.time() + 5
    while processing(engine):
        assert time.time() < deadline, "the engine kept generating for a client that left"
        time.sleep(0.05)


def test_a_replica_killed_under_load_costs_only_what_it_held(engine):
    doomed = Engine()
    bridge = Bridge(bridge_config(engine, doomed))
    through = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="unused", max_retries=0)
    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                through.chat.completions.create(**ASK, extra_body=ROUTE)
                statuses.append((time.time(), 200))
            except openai.APIStatusError as e:
                statuses.append((time.time(), e.status_code))

    workers = [threading.Thread(target=load) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        time.sleep(2)
        doomed.stop(kill=True)
        killed = time.time()
        time.sleep(4)
        stop.set()
        for w in workers:
            w.join()
        after = [s for t, s in statuses if t > killed + 0.5]
        assert len(after) > 5 and set(after) == {200}, after
        # At most the requests in flight on it at the kill failed, as 502s.
        failed = [s for _, s in statuses if s != 200]
        assert len(failed) <= 3 and set(failed) <= {502}, failed
    finally:
        stop.set()
        bridge.stop()
        doomed.stop()


def test_embeddings_of_a_real_model_are_the_same_through_bridge(embedder, bridge):
    direct = openai.OpenAI(base_url=f"{embedder.url}/v1", api_key="unused", max_retries=0)
    through = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="unused", max_retries=0)
    texts = ["a cat sits on the mat", "a kitten rests on a rug", "quantum chromodynamics lecture notes"]
    a = direct.embeddings.create(model="minilm", input=texts)
    b = through.embeddings.create(model="minilm", input=texts, extra_body={"baseten": {"model_id": "minilm"}})
    vectors = [d.embedding for d in b.data]
    assert vectors == [d.embedding for d in a.data] and len(vectors[0]) == 384
    assert a.usage.prompt_tokens == b.usage.prompt_tokens > 0

    def cosine(x, y):
        return sum(p * q for p, q in zip(x, y)) / (sum(p * p for p in x) * sum(q * q for q in y)) ** 0.5

    # It is all-MiniLM-L6-v2: similar sentences are near, unrelated ones are not.
    assert cosine(vectors[0], vectors[1]) > 0.5 > cosine(vectors[0], vectors[2]) + 0.3

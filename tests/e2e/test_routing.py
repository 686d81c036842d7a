"""Routing and relaying through the official OpenAI SDK, as users write it."""

import openai

MESSAGES = [{"role": "user", "content": "Hello"}]


def route(deployment=..., model_id="llama"):
    baseten = {"model_id": model_id}
    if deployment is not ...:
        baseten["deployment_id"] = deployment
    return {"baseten": baseten}


def test_production_serves_by_default(client):
    r = client.chat.completions.create(model="meta-llama/Llama-3.1-8B-Instruct", messages=MESSAGES, extra_body=route())
    assert "org/llama-v2" in r.choices[0].message.content
    # `model` reaches the engine unchanged (the simulator answers with the name it was sent).
    assert r.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_null_deployment_means_production(client):
    r = client.chat.completions.create(model="m", messages=MESSAGES, extra_body=route(None))
    assert "org/llama-v2" in r.choices[0].message.content


def test_pinned_deployment(client):
    r = client.chat.completions.create(model="m", messages=MESSAGES, extra_body=route("v1"))
    assert "org/llama-v1" in r.choices[0].message.content


def test_model_name_form_uses_served_model(client):
    r = client.chat.completions.create(model="baseten/llama/v1", messages=MESSAGES)
    assert r.model == "org/llama-v1"


def test_model_name_form_asks_the_replica_for_its_name(client):
    r = client.chat.completions.create(model="baseten/llama", messages=MESSAGES)
    assert r.model == "org/llama-v2"


def test_stream_without_usage(client):
    stream = client.chat.completions.create(model="m", messages=MESSAGES, extra_body=route(), stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Bridge's simulated engine org/llama-v2. This answer went through Bridge. 👋"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_with_include_usage(client):
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        extra_body=route("v1"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_completions(client):
    r = client.completions.create(model="m", prompt="Say hi", extra_body=route())
    assert r.object == "text_completion"
    assert "org/llama-v2" in r.choices[0].text
    stream = client.completions.create(model="m", prompt="Say hi", extra_body=route(), stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == r.choices[0].text


def test_embeddings(client):
    # The SDK asks for base64 by default and decodes it; floats on request.
    r = client.embeddings.create(model="e", input=["a", "b"], extra_body=route())
    assert [len(d.embedding) for d in r.data] == [8, 8]
    floats = client.embeddings.create(model="e", input="a", encoding_format="float", extra_body=route())
    assert [round(x, 5) for x in floats.data[0].embedding] == [round(x, 5) for x in r.data[0].embedding]


def test_models_list_and_retrieve(client, bridge):
    assert [m.id for m in client.models.list()] == ["legacy", "llama", "other"]
    llama = client.models.retrieve("llama")
    assert llama.owned_by == "bridge"
    assert llama.model_extra["production"] == "v2"
    limited = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="sk-limited", max_retries=0)
    assert [m.id for m in limited.models.list()] == ["other"]


def test_trailing_slash_base_url(bridge):
    c = openai.OpenAI(base_url=f"{bridge.url}/v1/direct/", api_key="sk-e2e", max_retries=0)
    r = c.chat.completions.create(model="m", messages=MESSAGES, extra_body=route())
    assert r.choices[0].message.content


def test_v1_prefix_behaves_the_same(bridge):
    c = openai.OpenAI(base_url=f"{bridge.url}/v1", api_key="sk-e2e", max_retries=0)
    r = c.chat.completions.create(model="m", messages=MESSAGES, extra_body=route("v1"))
    assert "org/llama-v1" in r.choices[0].message.content


def test_heartbeat_comments_are_invisible_to_the_sdk(client):
    # 150 ms between chunks, a `: ping` every 50 ms of silence: the SDK must skip them.
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        extra_body={**route("beating"), "simulate": {"chunks": 3, "gap_ms": 150}},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from Bridge's simulated engine org/llama-v1. This answer went through Bridge. 👋"

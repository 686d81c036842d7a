"""The predict adapter through the official OpenAI SDK: models with only a plain predict API."""

import json

import openai
import pytest

# The simulated predict model repeats the last message, then characters of every UTF-8 length;
# its raw streams are cut every 5 bytes, inside characters.
PROMPT = "Ünïcode 🙂 in, emoji out"
EXPECTED = f"You said: {PROMPT}. Ünïcödé ✓ 👋🏽"
MESSAGES = [{"role": "user", "content": PROMPT}]


def legacy(deployment=None):
    return {"baseten": {"model_id": "legacy", "deployment_id": deployment}}


@pytest.mark.parametrize("deployment", ["raw", "object"])
def test_non_streaming_answer_is_a_chat_completion(client, deployment):
    r = client.chat.completions.create(model="my-model", messages=MESSAGES, extra_body=legacy(deployment))
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "my-model"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == EXPECTED
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None


@pytest.mark.parametrize("deployment", ["raw", "sse", "object"])
def test_streamed_deltas_join_to_the_models_text_exactly(client, deployment):
    stream = client.chat.completions.create(
        model="my-model", messages=MESSAGES, stream=True, extra_body=legacy(deployment)
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_include_usage_ends_with_a_usage_chunk(client):
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, extra_body=legacy()
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED


def test_completions_take_a_prompt(client):
    r = client.completions.create(model="m", prompt="abc", extra_body=legacy())
    assert r.choices[0].text == "You said: abc. Ünïcödé ✓ 👋🏽"
    stream = client.completions.create(model="m", prompt="abc", stream=True, extra_body=legacy())
    assert "".join(c.choices[0].text for c in stream) == "You said: abc. Ünïcödé ✓ 👋🏽"


def test_fields_are_translated_and_renamed(client):
    r = client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=20, temperature=0.3, seed=4, extra_body=legacy("echo")
    )
    received = json.loads(r.choices[0].message.content)
    assert received == {"messages": MESSAGES, "stream": False, "max_new_tokens": 20, "temperature": 0.3, "seed": 4}


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3, "logprobs": False}, "top_logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}, "messages[0].content[0]"),
    ],
)
def test_what_the_adapter_cannot_do_is_a_400_naming_the_parameter(client, kwargs, param):
    kwargs = {"messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", extra_body=legacy(), **kwargs)
    assert raised.value.body["param"] == param
    assert raised.value.body["code"] == "unsupported_parameter"


def test_model_errors_keep_status_and_message(client):
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="m", messages=MESSAGES, extra_body=legacy("failing"))
    assert "simulated model failure" in raised.value.message


def test_the_previous_bridges_url_form(bridge):
    old = openai.OpenAI(base_url=f"{bridge.url}/legacy/v1", api_key="sk-e2e", max_retries=0)
    r = old.chat.completions.create(model="anything", messages=MESSAGES)
    assert r.choices[0].message.content == EXPECTED
    stream = old.chat.completions.create(model="anything", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == EXPECTED

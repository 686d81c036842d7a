"""Every error row, as the SDK's exception classes see it."""

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Hello"}]
JSON = {"headers": {"content-type": "application/json"}}


def chat(client, **kwargs):
    return client.chat.completions.create(model="m", messages=MESSAGES, **kwargs)


def test_no_routing_information(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client)
    assert "extra_body" in e.value.message
    assert e.value.param == "baseten"
    assert e.value.code == "missing_routing"


@pytest.mark.parametrize(
    "baseten, param",
    [("llama", "baseten"), ([1], "baseten"), ({"model_id": 7}, "baseten.model_id"), ({}, "baseten.model_id")],
)
def test_malformed_routing(client, baseten, param):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, extra_body={"baseten": baseten})
    assert e.value.param == param
    assert "extra_body" in e.value.message


def test_unknown_model_and_deployment(client):
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, extra_body={"baseten": {"model_id": "nope"}})
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:
        chat(client, extra_body={"baseten": {"model_id": "llama", "deployment_id": "v9"}})
    assert e.value.code == "deployment_not_found"


def test_wrong_key(bridge):
    c = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        chat(c, extra_body={"baseten": {"model_id": "llama"}})


def test_model_outside_allow_list_is_not_found(bridge):
    c = openai.OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="sk-limited", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        chat(c, extra_body={"baseten": {"model_id": "llama"}})
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("content", [b'{"model": ', b"[1, 2]", b'{"model": "\xff"}'])
def test_bad_bodies(client, content):
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", content=content, cast_to=object, options=JSON)
    assert e.value.code == "invalid_json"


def test_body_over_the_limit(client):
    with pytest.raises(openai.APIStatusError) as e:
        chat(client, extra_body={"baseten": {"model_id": "llama"}, "padding": "x" * (2 << 20)})
    assert e.value.status_code == 413


def test_unknown_route_and_wrong_method(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.post("/nope", body={}, cast_to=object)
    assert e.value.code == "unknown_route"
    with pytest.raises(openai.APIStatusError) as e:
        client.get("/chat/completions", cast_to=object)
    assert e.value.status_code == 405


def test_engine_unreachable(client):
    with pytest.raises(openai.InternalServerError) as e:
        chat(client, extra_body={"baseten": {"model_id": "llama", "deployment_id": "down"}})
    assert e.value.status_code == 502


def test_engine_timeout(client):
    with pytest.raises(openai.InternalServerError) as e:
        chat(client, extra_body={"baseten": {"model_id": "llama", "deployment_id": "slow"}, "simulate": {"delay_ms": 3000}})
    assert e.value.status_code == 504


def test_engine_error_keeps_status_and_message(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, extra_body={"baseten": {"model_id": "llama"}, "simulate": {"status": 400, "message": "context length exceeded"}})
    assert e.value.body["message"] == "context length exceeded"
    assert e.value.code == "400"  # vLLM's integer code, as a string
    assert e.value.request_id == e.value.response.headers["x-request-id"]


@pytest.mark.parametrize("fault", [{"fail_after": 2, "gap_ms": 20}, {"error_after": 2}, {"no_done": True}])
def test_stream_failures_raise_api_error(client, fault):
    stream = chat(client, stream=True, extra_body={"baseten": {"model_id": "llama"}, "simulate": fault})
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "chunks sent before the failure are delivered"

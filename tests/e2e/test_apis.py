"""The Responses API and Anthropic's Messages API through Bridge, with their official SDKs."""

import anthropic
import openai
import pytest

ROUTE = {"baseten": {"model_id": "llama"}}


def routed(**extra):
    return {**ROUTE, **extra}


def test_responses_create(client):
    response = client.responses.create(model="free-form", input="hello there", extra_body=ROUTE)
    assert response.object == "response"
    assert response.status == "completed"
    assert "org/llama-v2" in response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def test_responses_stream(client):
    events = list(
        client.responses.create(model="free-form", input="hi", stream=True, extra_body=ROUTE)
    )
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text


def test_a_broken_responses_stream_ends_with_an_error_event(client):
    simulate = {"fail_after": 2, "gap_ms": 20}
    events = list(
        client.responses.create(
            model="free-form", input="hi", stream=True, extra_body=routed(simulate=simulate)
        )
    )
    assert events[-1].type == "error"
    assert events[-1].code == "upstream_stream_broken"
    assert events[-1].sequence_number == events[-2].sequence_number + 1


def test_retrieve_and_follow_ups_reach_the_replica_that_made_the_response(client):
    # Two replicas, each keeping its own responses: a request sent to either at random would
    # miss half the time.
    pair = {"baseten": {"model_id": "llama", "deployment_id": "pair"}}
    first = client.responses.create(model="free-form", input="hello", extra_body=pair)
    previous = first.id
    for _ in range(6):
        assert client.responses.retrieve(first.id).id == first.id
        follow = client.responses.create(
            model="free-form", input="and then?", previous_response_id=previous, extra_body=pair
        )
        assert follow.previous_response_id == previous
        previous = follow.id
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_never_seen")


@pytest.fixture
def claude(bridge):
    # The SDK appends /v1/messages to its base URL: Bridge's root.
    return anthropic.Anthropic(base_url=bridge.url, api_key="sk-e2e", max_retries=0)


def ask(**extra):
    return dict(
        model="free-form",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello there"}],
        extra_body=routed(**extra),
    )


def test_messages_create(claude):
    message = claude.messages.create(**ask())
    assert message.type == "message"
    assert "org/llama-v2" in message.content[0].text
    assert message.usage.input_tokens > 0


def test_messages_stream(claude):
    with claude.messages.stream(**ask()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text
    assert final.stop_reason == "end_turn"


def test_count_tokens(claude):
    counted = claude.messages.count_tokens(
        model="free-form", messages=[{"role": "user", "content": "three words here"}], extra_body=ROUTE
    )
    assert counted.input_tokens == 3


@pytest.mark.parametrize(
    "key, extra, error",
    [
        ("sk-wrong", {}, anthropic.AuthenticationError),
        ("sk-e2e", {"baseten": {"model_id": "nope"}}, anthropic.NotFoundError),
        ("sk-limited", {}, anthropic.NotFoundError),
        ("sk-e2e", {"simulate": {"status": 400, "message": "prompt too long"}}, anthropic.BadRequestError),
        ("sk-e2e", {"simulate": {"status": 429}}, anthropic.RateLimitError),
        ("sk-e2e", {"simulate": {"status": 500}}, anthropic.InternalServerError),
        ("sk-e2e", {"baseten": {"model_id": "llama", "deployment_id": "down"}}, anthropic.InternalServerError),
        ("sk-e2e", {"simulate": {"status": 422}}, anthropic.UnprocessableEntityError),
        ("sk-e2e", {"simulate": {"status": 503}}, anthropic.ServiceUnavailableError),
        (
            "sk-e2e",
            {"baseten": {"model_id": "llama", "deployment_id": "slow"}, "simulate": {"delay_ms": 2000}},
            anthropic.GatewayTimeoutError,
        ),
        ("sk-e2e", {"padding": "x" * (2 << 20)}, anthropic.ContentTooLargeError),
    ],
)
def test_every_error_is_the_sdks_own_class(bridge, key, extra, error):
    claude = anthropic.Anthropic(base_url=bridge.url, api_key=key, max_retries=0)
    request = ask()
    request["extra_body"] = {**request["extra_body"], **extra}
    with pytest.raises(error) as raised:
        claude.messages.create(**request)
    assert raised.value.body["type"] == "error"


def test_no_routing_is_a_bad_request(bridge):
    claude = anthropic.Anthropic(base_url=bridge.url, api_key="sk-e2e", max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="baseten"):
        claude.messages.create(
            model="free-form", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )


def test_a_broken_stream_raises(claude):
    with pytest.raises(anthropic.APIStatusError):
        with claude.messages.stream(**ask(simulate={"fail_after": 2, "gap_ms": 20})) as stream:
            for _ in stream.text_stream:
                pass


def test_audio_transcription_with_extra_body(client):
    audio = b"RIFF\x00\x01fake audio\r\n--not-a-boundary\r\n" + bytes(range(256)) * 40
    transcription = client.audio.transcriptions.create(
        model="whisper-1",
        file=("hello.wav", audio, "audio/wav"),
        extra_body=ROUTE,
    )
    # The engine says what it received: the file, whole, and no routing fields.
    assert f"file=hello.wav, {len(audio)} bytes" in transcription.text
    assert "model=whisper-1" in transcription.text
    assert "baseten" not in transcription.text
    text = client.audio.translations.create(
        model="whisper-1", file=("hi.wav", b"abc", "audio/wav"), response_format="text", extra_body=ROUTE
    )
    assert "file=hi.wav, 3 bytes" in text

"""The README's quick start: `bridge serve` with no config, then the Python snippet."""

import json
import pathlib
import re
import subprocess

import anthropic
from openai import OpenAI

from conftest import Process


def test_demo_model_streams():
    bridge = Process("serve", "--listen", "127.0.0.1:0")
    try:
        client = OpenAI(base_url=f"{bridge.url}/v1/direct", api_key="unused")
        stream = client.chat.completions.create(
            model="bridge-demo",
            messages=[{"role": "user", "content": "Hello"}],
            extra_body={"baseten": {"model_id": "demo"}},
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.startswith("Hello from Bridge's simulated engine bridge-demo.")
        assert [m.id for m in client.models.list()] == ["demo", "demo-predict"]
        # The README's predict example: the same engine's plain predict API, through the adapter.
        r = client.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "Hello"}],
            extra_body={"baseten": {"model_id": "demo-predict"}},
        )
        assert r.choices[0].message.content.startswith("You said: Hello.")
        # The README's Responses API and Anthropic SDK examples.
        response = client.responses.create(
            model="bridge-demo", input="Hello", extra_body={"baseten": {"model_id": "demo"}}
        )
        assert response.output_text.startswith("Hello from Bridge's simulated engine")
        claude = anthropic.Anthropic(base_url=bridge.url, api_key="unused")
        message = claude.messages.create(
            model="bridge-demo",
            max_tokens=256,
            messages=[{"role": "user", "content": "Hello"}],
            extra_body={"baseten": {"model_id": "demo"}},
        )
        assert message.content[0].text.startswith("Hello from Bridge's simulated engine")
    finally:
        bridge.stop()


README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_curl_blocks() -> list:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if "curl " in b]


def test_the_readmes_curl_examples_run_as_written():
    blocks = readme_curl_blocks()
    assert len(blocks) == 4
    bridge = Process("serve", "--listen", "127.0.0.1:0")
    try:
        answers = []
        for block in blocks:
            # Only the address changes: the demo listens on a free port here.
            command = block.replace("http://127.0.0.1:8080", bridge.url)
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            answers.append(done.stdout)
        chat, stream, by_name, models = answers
        assert json.loads(chat)["choices"][0]["message"]["content"].startswith("Hello from Bridge")
        events = [l for l in stream.splitlines() if l.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 3
        assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"
        assert json.loads(by_name)["object"] == "chat.completion"
        assert [m["id"] for m in json.loads(models)["data"]] == ["demo", "demo-predict"]
    finally:
        bridge.stop()

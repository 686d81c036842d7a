"""Limits held by fleets of two and three Bridge processes sharing a real Redis: requests,
tokens (with streams) and requests in flight; OpenAI's 429 and headers; the SDKs' own error
classes; an instance killed with slots held; Redis stopped and started under load; response
ids across instances."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2 as httpx  # the HTTP client the OpenAI SDK itself uses
import openai
import pytest

from conftest import Process
from fleet import Fleet, Redis, fleet_config, metric, wait_for_metric

ROUTE = {"baseten": {"model_id": "llama"}}


@pytest.fixture(scope="module")
def engine():
    sim = Process("simulate", "--listen", "127.0.0.1:0", "--model", "org/llama-v1", "--chunks", "8")
    yield sim
    sim.stop()


@pytest.fixture
def redis():
    server = Redis()
    yield server
    server.stop()


def body(**extra) -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **ROUTE, **extra}
    ).encode()


def chat(url: str, key: str = "sk-team-a", **extra) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/direct/chat/completions",
        content=body(**extra),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=60,
    )


def stream(url: str, key: str = "sk-team-a", **extra):
    """A whole stream: (status, text, headers)."""
    with httpx.stream(
        "POST",
        f"{url}/v1/direct/chat/completions",
        content=body(stream=True, **extra),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=60,
    ) as r:
        return r.status_code, r.read().decode(), r.headers


def open_stream(client, url: str, gap_ms: int):
    """A long stream whose head has arrived (its slot is held), left open for the caller."""
    request = client.build_request(
        "POST",
        f"{url}/v1/direct/chat/completions",
        content=body(stream=True, simulate={"gap_ms": gap_ms, "chunks": 60}),
        headers={"authorization": "Bearer sk-team-a", "content-type": "application/json"},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    return response


def test_rpm_holds_across_three_instances(engine, redis):
    fleet = Fleet(3, fleet_config(engine.url, redis.url, "rpm = 30"))
    try:
        urls = fleet.urls()
        start = time.time()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: chat(urls[i % 3]), range(90)))
        elapsed = time.time() - start
        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(ok) + len(refused) == 90
        # The burst gets the limit (within 5%, plus one per instance), and what refilled during it.
        assert 30 * 0.95 <= len(ok) <= 30 + 30 * elapsed / 60 + 3, (len(ok), elapsed)

        error = refused[0].json()["error"]
        assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
        assert "key 'team-a'" in error["message"] and "Limit 30" in error["message"]
        headers = refused[0].headers
        assert int(headers["retry-after"]) >= 1
        assert "x-should-retry" not in headers
        assert headers["x-ratelimit-limit-requests"] == "30"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert ok[0].headers["x-ratelimit-limit-requests"] == "30"
        assert ok[0].headers["x-ratelimit-reset-requests"].endswith("s")

        # Another key has no limits: no headers, no refusal.
        free = chat(urls[0], key="sk-free")
        assert free.status_code == 200 and "x-ratelimit-limit-requests" not in free.headers
        limited = sum(metric(u, "bridge_rate_limited_requests_total") for u in urls)
        assert limited == len(refused)
        # What was measured is the shared counters: no instance fell back to counting alone.
        assert sum(metric(u, "bridge_limits_redis_fallbacks_total") for u in urls) == 0

        # Then admission continues at 30 a minute: one every 2 s.
        time.sleep(4.2)
        passed = sum(chat(urls[i % 3]).status_code == 200 for i in range(6))
        assert 2 <= passed <= 3, passed
    finally:
        fleet.stop()


def test_a_model_limit_holds_for_every_key(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "", model_limits="rpm = 4"))
    try:
        urls = fleet.urls()
        answers = [chat(urls[i % 2], key=("sk-free", "sk-team-a")[i % 2]) for i in range(8)]
        assert [a.status_code for a in answers].count(200) == 4
        error = answers[-1].json()["error"]
        assert "model 'llama'" in error["message"]
    finally:
        fleet.stop()


def test_tokens_are_reserved_up_front_and_settled_when_streams_end(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "tpm = 1000"))
    # Streams of ~2.4 s: all ten arrive before the first ends.
    slow = {"max_tokens": 200, "simulate": {"gap_ms": 300}}
    estimate = len(body(stream=True, **slow)) // 4 + 200
    try:
        urls = fleet.urls()

        def burst():
            with ThreadPoolExecutor(10) as pool:
                return list(pool.map(lambda i: stream(urls[i % 2], **slow), range(10)))

        first = burst()
        ok = [a for a in first if a[0] == 200]
        refused = [a for a in first if a[0] == 429]
        # Reservations of the estimate: no more streams start than the budget holds (plus at
        # most one per instance, admitted on credit when Redis answered late).
        assert 1 <= len(ok) <= 1000 // estimate + 2, (len(ok), estimate)
        # An admitted stream is never cut off: each ends whole, with its usage.
        for _, text, _ in ok:
            assert text.rstrip().endswith("data: [DONE]")
        error = json.loads(refused[0][1])["error"]
        assert (error["code"], error["type"]) == ("rate_limit_exceeded", "tokens")
        assert "tokens per min (TPM)" in error["message"]
        assert refused[0][2]["x-ratelimit-limit-tokens"] == "1000"

        # Settled with the engine's usage (a few tokens each): the budget came back, and a
        # second burst starts as many streams again. Without settling, ~17 tokens refilled.
        second = burst()
        assert sum(a[0] == 200 for a in second) >= len(ok) - 1
    finally:
        fleet.stop()


def test_requests_in_flight_across_instances(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "max_concurrent = 3"))
    slow = {"simulate": {"gap_ms": 150}}
    try:
        urls = fleet.urls()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: stream(urls[i % 2], **slow), range(8)))
        statuses = [a[0] for a in answers]
        assert 3 <= statuses.count(200) <= 3 + 2, statuses
        assert statuses.count(200) + statuses.count(429) == 8
        error = json.loads(next(a[1] for a in answers if a[0] == 429))["error"]
        assert "requests in flight (max_concurrent): Limit 3" in error["message"]
        # Every slot came back: three at once again, on either instance.
        time.sleep(0.5)
        with ThreadPoolExecutor(3) as pool:
            again = list(pool.map(lambda i: stream(urls[i % 2], **slow)[0], range(3)))
        assert again == [200, 200, 200]
    finally:
        fleet.stop()


def test_a_killed_instances_slots_come_back(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "max_concurrent = 2"))
    a, b = fleet.members
    try:
        client = httpx.Client(timeout=60)
        held = [open_stream(client, a.url, 1000) for _ in range(2)]
        assert chat(b.url).status_code == 429
        a.proc.kill()
        a.proc.wait()
        killed = time.time()
        while chat(b.url).status_code != 200:
            assert time.time() - killed < 15, "the dead instance's slots never came back"
            time.sleep(0.25)
        for r in held:
            try:
                r.close()
            except httpx.HTTPError:
                pass
        client.close()
    finally:
        fleet.stop()


def test_redis_stopped_and_started_under_load(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "max_concurrent = 50"))
    urls = fleet.urls()
    statuses = []
    stop = threading.Event()

    def load(i):
        while not stop.is_set():
            statuses.append(chat(urls[i % 2]).status_code)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(1)
        redis.stop()
        for u in urls:
            wait_for_metric(u, "bridge_limits_redis_up", 0, timeout=10)
        time.sleep(1)
        redis.start()
        for u in urls:
            wait_for_metric(u, "bridge_limits_redis_up", 1, timeout=15)
        # Counted in Redis again: the slots of requests in flight are there.
        deadline = time.time() + 5
        while not redis.command("HLEN", "bridge:key:team-a:max_concurrent").startswith(b":1") \
                and not redis.command("HLEN", "bridge:key:team-a:max_concurrent").startswith(b":2"):
            assert time.time() < deadline, "no slot was counted in Redis after it came back"
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join()
        assert len(statuses) > 20
        assert set(statuses) == {200}, sorted(set(statuses))
        for u in urls:
            assert metric(u, "bridge_limits_redis_fallbacks_total") >= 1
    finally:
        stop.set()
        fleet.stop()


def test_without_redis_each_instance_enforces_its_share(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "rpm = 10"))
    try:
        urls = fleet.urls()
        redis.stop()
        for u in urls:
            wait_for_metric(u, "bridge_limits_redis_up", 0, timeout=10)
        answers = [chat(urls[i % 2]).status_code for i in range(30)]
        # Each enforces its half: the fleet stays near its limit, and nothing fails.
        assert 8 <= answers.count(200) <= 12, answers
        assert set(answers) == {200, 429}
    finally:
        fleet.stop()


def test_the_sdks_raise_their_rate_limit_errors(engine, redis):
    fleet = Fleet(1, fleet_config(engine.url, redis.url, "rpm = 1"))
    try:
        url = fleet.urls()[0]
        client = openai.OpenAI(base_url=f"{url}/v1/direct", api_key="sk-team-a", max_retries=0)
        ask = dict(model="m", messages=[{"role": "user", "content": "hi"}], extra_body=ROUTE)
        client.chat.completions.create(**ask)
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(**ask)
        assert raised.value.code == "rate_limit_exceeded"
        assert raised.value.type == "requests"

        claude = anthropic.Anthropic(base_url=url, api_key="sk-team-a", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as raised:
            claude.messages.create(
                model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}], extra_body=ROUTE
            )
        assert raised.value.body["error"]["type"] == "rate_limit_error"
    finally:
        fleet.stop()


def test_response_ids_work_through_any_instance(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, ""))
    try:
        a, b = (
            openai.OpenAI(base_url=f"{u}/v1/direct", api_key="sk-free", max_retries=0)
            for u in fleet.urls()
        )
        made = a.responses.create(model="m", input="hello", extra_body=ROUTE)
        # Made through A, found through B: retrieved, and continued.
        assert b.responses.retrieve(made.id).id == made.id
        follow = b.responses.create(
            model="m", input="and then?", previous_response_id=made.id, extra_body=ROUTE
        )
        assert follow.status == "completed"
        # Another key never reaches it, through any instance.
        other = openai.OpenAI(base_url=f"{fleet.urls()[1]}/v1/direct", api_key="sk-team-a", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(made.id)
    finally:
        fleet.stop()


def test_a_client_that_leaves_gives_its_slot_back(engine, redis):
    fleet = Fleet(2, fleet_config(engine.url, redis.url, "max_concurrent = 1"))
    a, b = fleet.urls()
    try:
        client = httpx.Client(timeout=60)
        held = open_stream(client, a, 500)
        assert chat(b).status_code == 429
        # The client leaves mid-stream: its slot returns to the fleet at once.
        held.close()
        client.close()
        left = time.time()
        while chat(b).status_code != 200:
            assert time.time() - left < 3, "the slot of a client that left never came back"
            time.sleep(0.05)
    finally:
        fleet.stop()


def test_limits_follow_a_reload(engine, redis):
    fleet = Fleet(1, fleet_config(engine.url, redis.url, "rpm = 2"))
    url = fleet.urls()[0]
    try:
        assert [chat(url).status_code for _ in range(3)] == [200, 200, 429]
        path = fleet.dir / "bridge.toml"
        path.write_text(path.read_text().replace("rpm = 2", "rpm = 1000"))
        # Bridge looks at its file every second; the new limit's bucket refills at its rate.
        deadline = time.time() + 10
        while chat(url).headers.get("x-ratelimit-limit-requests") != "1000":
            assert time.time() < deadline, "the new limit never applied"
            time.sleep(0.2)
    finally:
        fleet.stop()

"""Cache-aware balancing on real engines: three llama-server replicas behind Bridge, multi-turn
conversations, `balance = "least_outstanding"` against `balance = "prefix"`.

    python3 benchmarks/prefix.py LLAMA_SERVER MODEL.gguf BRIDGE_BINARY OUT_DIR

(scripts/bench-prefix.sh builds the engine, the model and Bridge, and runs this.) Each arm runs
twice, interleaved (least_outstanding, prefix, least_outstanding, prefix), each time with fresh
engines (empty caches) and a fresh Bridge. The workload: 12 conversations of 4 turns, sharing
one system prompt, each with its own first question; 4 client threads each alternate between
3 conversations, so every engine sees conversations interleaved. Streams with usage: the
engine reports `usage.prompt_tokens_details.cached_tokens` (prompt tokens served from its
cache), and the client measures time to first token. Everything binds 127.0.0.1.
"""

import http.client
import json
import os
import pathlib
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LLAMA, MODEL, BRIDGE, OUT = sys.argv[1:5]
CONVERSATIONS, TURNS, THREADS = 12, 4, 4
SLOTS, SLOT_CONTEXT = 4, 4096
WORDS = ("owl bat heron otter lynx badger falcon marten stoat vole wren finch crane ibis egret "
         "moose bison yak ibex tapir").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port: int, proc, what: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become healthy")


def start_engines():
    engines = []
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [LLAMA, "-m", MODEL, "--host", "127.0.0.1", "--port", str(port),
             "-c", str(SLOTS * SLOT_CONTEXT), "-np", str(SLOTS), "--jinja", "--temp", "0",
             "--seed", "1", "-t", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_health(port, proc, "llama-server")
        engines.append((port, proc))
    return engines


def start_bridge(engines, balance: str):
    replicas = ", ".join(f'"http://127.0.0.1:{port}/v1"' for port, _ in engines)
    path = pathlib.Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:0"
[[models]]
id = "tiny"
[[models.deployments]]
id = "v1"
replicas = [{replicas}]
balance = "{balance}"
""")
    proc = subprocess.Popen([BRIDGE, "serve", "--config", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUST_LOG": "warn"})
    port = int(re.search(r":(\d+)", proc.stdout.readline()).group(1))
    wait_health(port, proc, "bridge")
    return port, proc


def sentence(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


SYSTEM = "You are the zoo's guide. Answer briefly and kindly. " * 14


def turn(port: int, messages) -> dict:
    """One streamed turn: time to first token, the engine's cached and total prompt tokens."""
    body = json.dumps({"model": "tiny", "messages": messages, "max_tokens": 12, "stream": True,
                       "stream_options": {"include_usage": True},
                       "baseten": {"model_id": "tiny"}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/direct/chat/completions", body, {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    ttft, text, usage = None, "", None
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            content = choice.get("delta", {}).get("content")
            if content:
                ttft = ttft or time.perf_counter() - start
                text += content
        usage = chunk.get("usage") or usage
    conn.close()
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"ttft": ttft, "prompt": usage["prompt_tokens"], "cached": cached, "text": text}


def run_arm(balance: str, seed: int) -> list:
    engines = start_engines()
    port, bridge = start_bridge(engines, balance)
    results, lock = [], threading.Lock()
    rng = random.Random(seed)
    conversations = [[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": f"Question {i}: " + sentence(rng, 90)}]
                     for i in range(CONVERSATIONS)]

    def client(mine):
        for t in range(TURNS):
            for c in mine:
                messages = conversations[c]
                r = turn(port, messages)
                messages += [{"role": "assistant", "content": r["text"]},
                             {"role": "user", "content": sentence(rng, 30)}]
                with lock:
                    results.append({**r, "turn": t, "conversation": c})

    threads = [threading.Thread(target=client, args=(list(range(i, CONVERSATIONS, THREADS)),))
               for i in range(THREADS)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        bridge.terminate()
        bridge.wait()
        for _, proc in engines:
            proc.terminate()
            proc.wait()
    return results


def summary(results) -> dict:
    later = [r for r in results if r["turn"] > 0]
    ttft = lambda rs, q: statistics.quantiles([r["ttft"] for r in rs], n=100)[q - 1] * 1000
    return {
        "requests": len(results),
        "prompt_tokens": sum(r["prompt"] for r in results),
        "cached_tokens": sum(r["cached"] for r in results),
        "cached_share_later_turns": sum(r["cached"] for r in later) / sum(r["prompt"] for r in later),
        "ttft_p50_ms": ttft(results, 50),
        "ttft_p90_ms": ttft(results, 90),
        "ttft_p50_later_turns_ms": ttft(later, 50),
        "ttft_p90_later_turns_ms": ttft(later, 90),
    }


def main():
    out = pathlib.Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, balance in enumerate(["least_outstanding", "prefix", "least_outstanding", "prefix"]):
        start = time.time()
        results = run_arm(balance, seed=i // 2)
        s = summary(results)
        s.update(balance=balance, run=i // 2 + 1, seconds=round(time.time() - start, 1))
        runs.append(s)
        print(json.dumps(s), flush=True)
        (out / f"{i}-{balance}.json").write_text(json.dumps(results, indent=1))
    (out / "summary.json").write_text(json.dumps(runs, indent=1))
    print("\n| arm | run | prompt tokens | cached | cached share, turns 2-4 | TTFT p50 / p90, all (ms) | TTFT p50 / p90, turns 2-4 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for s in runs:
        print(f"| {s['balance']} | {s['run']} | {s['prompt_tokens']:,} | {s['cached_tokens']:,} | "
              f"{s['cached_share_later_turns']:.0%} | {s['ttft_p50_ms']:.0f} / {s['ttft_p90_ms']:.0f} | "
              f"{s['ttft_p50_later_turns_ms']:.0f} / {s['ttft_p90_later_turns_ms']:.0f} |")


if __name__ == "__main__":
    main()

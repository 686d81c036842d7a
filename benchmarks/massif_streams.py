"""Bytes per open stream, by allocation site: runs a `bridge` binary under valgrind's massif
(one worker), opens N streams of 40 chunks @ 500 ms against the engine at SIM_URL, waits for
them to end, and stops Bridge. The heap while all streams are open (the plateau in
`ms_print massif.out`), minus the heap after they ended, divided by N, is what one stream
holds; the detailed snapshots name the sites.

    target/release/bridge simulate --listen 127.0.0.1:0      # prints the engine's URL
    python3 benchmarks/massif_streams.py BINARY http://127.0.0.1:PORT 300
    ms_print massif.out

Use a build with glibc's allocator (comment out `#[global_allocator]` in main.rs) so massif
sees the bytes requested, not mimalloc's pages. Needs valgrind (Debian: valgrind)."""
import asyncio, json, os, re, signal, subprocess, sys, tempfile, time

binary, sim_url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(f'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n[[models]]\nid = "m"\n[[models.deployments]]\n'
          f'id = "d"\nreplicas = ["{sim_url}/v1"]\nhealth_path = ""\n')
cfg.close()
p = subprocess.Popen(["valgrind", "--tool=massif", "--threshold=0.5", "--max-snapshots=200", "--detailed-freq=1",
                      "--massif-out-file=massif.out", binary, "serve", "--config", cfg.name],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
host, port = re.search(r"http://([\d.]+):(\d+)", p.stdout.readline()).groups()
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                   "simulate": {"chunks": 40, "gap_ms": 500}, "baseten": {"model_id": "m"}}).encode()


async def one():
    r, w = await asyncio.open_connection(host, int(port))
    w.write(b"POST /v1/direct/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body)
    await w.drain()
    while True:
        d = await r.read(65536)
        if not d or b"[DONE]" in d:
            break
    w.close()


async def main():
    await asyncio.sleep(2)
    await asyncio.gather(*[one() for _ in range(n)])

asyncio.run(main())
time.sleep(2)
p.send_signal(signal.SIGTERM)
p.wait()
os.unlink(cfg.name)

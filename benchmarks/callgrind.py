"""Instructions per request of a `bridge` binary, counted by callgrind (repeatable whatever else
the machine does). Runs N requests over one keep-alive connection for N = 500 and 2,500 and
reports the difference divided by 2,000, so start-up and shutdown cancel out.

    target/release/bridge simulate --listen 127.0.0.1:0      # prints the engine's URL
    RUST_LOG=warn python3 benchmarks/callgrind.py target/release/bridge http://127.0.0.1:PORT

A third argument adds lines to the model's table, e.g. its limits:
    ... callgrind.py BINARY URL 'rpm = 6000000
    tpm = 6000000000'

A fourth argument adds top-level tables; `{collector}` in it is the URL of a trace sink this
script runs (it answers every OTLP export with 200), e.g. traces for every request:
    ... callgrind.py BINARY URL '' '[tracing]
    otlp_endpoint = "{collector}"'

A fifth argument adds lines to the deployment's table, e.g. `balance = "prefix"`; when it sets
`replicas`, `{sim_url}` in it is the engine's URL (the same engine may be listed several times).

`HEADERS=sdk` sends the sixteen headers the official Python SDK sends on every call (nine of them
`X-Stainless-*`) instead of one `content-type`.

Needs valgrind (Debian: valgrind). One worker; the engine runs outside valgrind."""
import http.client, http.server, json, os, re, signal, subprocess, sys, tempfile, threading, time

binary, sim_url = sys.argv[1], sys.argv[2]
model_extra = sys.argv[3] if len(sys.argv) > 3 else ""
top_extra = sys.argv[4] if len(sys.argv) > 4 else ""
deployment_extra = (sys.argv[5] if len(sys.argv) > 5 else "").replace("{sim_url}", sim_url)
replicas = "" if "replicas" in deployment_extra else f'replicas = ["{sim_url}/v1"]'
if "{collector}" in top_extra:
    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        def log_message(self, *args): pass
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    top_extra = top_extra.replace("{collector}", f"http://127.0.0.1:{sink.server_address[1]}")
counts = (500, 2500)
headers = {"content-type": "application/json"}
if os.environ.get("HEADERS") == "sdk":
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Accept-Encoding": "gzip, deflate", "User-Agent": "OpenAI/Python 1.99.0",
               "Authorization": "Bearer sk-test", "X-Stainless-Lang": "python",
               "X-Stainless-Package-Version": "1.99.0", "X-Stainless-OS": "Linux",
               "X-Stainless-Arch": "x64", "X-Stainless-Runtime": "CPython",
               "X-Stainless-Runtime-Version": "3.11.2", "X-Stainless-Async": "false",
               "X-Stainless-Retry-Count": "0", "X-Stainless-Read-Timeout": "600",
               "Connection": "keep-alive"}
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hello there, how are you today?"}],
                   "max_tokens": 16, "baseten": {"model_id": "m"}})
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(f'{top_extra}\n[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n[[models]]\nid = "m"\n{model_extra}\n[[models.deployments]]\nid = "d"\n{replicas}\nhealth_path = ""\n{deployment_extra}\n')
cfg.close()
totals = []
for n in counts:
    out = tempfile.mktemp(suffix=".cg")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve", "--config", cfg.name],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    addr = re.search(r"http://([\d.]+):(\d+)", line)
    conn = http.client.HTTPConnection(addr.group(1), int(addr.group(2)))
    for _ in range(n):
        conn.request("POST", "/v1/direct/chat/completions", body, headers)
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
    conn.close()
    p.send_signal(signal.SIGTERM); p.wait()
    text = open(out).read()
    total = int(re.search(r"^summary:\s+(\d+)", text, re.M).group(1))
    totals.append(total)
    os.unlink(out)
os.unlink(cfg.name)
print(f"{binary}: {(totals[1]-totals[0])/(counts[1]-counts[0]):.0f} instructions per request ({totals})")

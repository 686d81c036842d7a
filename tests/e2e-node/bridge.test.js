// Bridge through the official OpenAI Node SDK (pinned in package.json): chat streamed and not,
// completions, embeddings, the Responses API, the model list, routing by extra body fields and
// by the `baseten/...` model form, and the SDK's error class for each error Bridge gives.
// Real `bridge` processes on 127.0.0.1 port 0 (BRIDGE_BIN), stopped when the tests end.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import OpenAI from "openai";

const BRIDGE = process.env.BRIDGE_BIN ?? new URL("../../target/debug/bridge", import.meta.url).pathname;
const processes = [];

/** Starts `bridge ...args` and resolves with the URL it announces. */
function start(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BRIDGE, args, { stdio: ["ignore", "pipe", "ignore"] });
    processes.push(child);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = out.match(/listening on (http:\/\/\S+)/);
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`${args.join(" ")} exited (${code}): ${out}`)));
  });
}

/** A loopback port where nothing listens (bound, never listening: connections are refused). */
function closedPort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

let url;
let client;
let scratch;

before(async () => {
  const engine = await start("simulate", "--listen", "127.0.0.1:0", "--model", "org/llama", "--chunks", "5");
  const down = await closedPort();
  const config = `
[server]
listen = "127.0.0.1:0"

[[auth.keys]]
name = "node"
key = "sk-node"

[[models]]
id = "llama"
production = "v1"

[[models.deployments]]
id = "v1"
replicas = ["${engine}/v1"]
served_model = "org/llama"

[[models.deployments]]
id = "down"
replicas = ["http://127.0.0.1:${down}/v1"]
health_path = ""
`;
  scratch = mkdtempSync(join(tmpdir(), "bridge-node-"));
  const path = join(scratch, "bridge.toml");
  writeFileSync(path, config);
  url = await start("serve", "--config", path);
  // No SDK retries: every test sees exactly the answer Bridge gave.
  client = new OpenAI({ baseURL: `${url}/v1/direct`, apiKey: "sk-node", maxRetries: 0 });
});

after(() => {
  for (const child of processes) child.kill("SIGTERM");
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const route = { baseten: { model_id: "llama" } };
const hello = [{ role: "user", content: "Hello" }];

test("chat completion, routed by an extra body field", async () => {
  const reply = await client.chat.completions.create({ model: "anything", messages: hello, ...route });
  assert.equal(reply.object, "chat.completion");
  assert.match(reply.choices[0].message.content, /org\/llama/);
  assert.ok(reply.usage.prompt_tokens > 0);
});

test("chat completion streamed, with include_usage", async () => {
  const stream = await client.chat.completions.create({
    model: "anything",
    messages: hello,
    stream: true,
    stream_options: { include_usage: true },
    ...route,
  });
  let text = "";
  let usage;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  assert.match(text, /org\/llama/);
  assert.ok(usage.completion_tokens > 0);
});

test("routing by the baseten/... model form", async () => {
  const reply = await client.chat.completions.create({ model: "baseten/llama/v1", messages: hello });
  assert.equal(reply.model, "org/llama", "the engine's own model name went upstream");
});

test("completions and embeddings", async () => {
  const completion = await client.completions.create({ model: "m", prompt: "Say hi", ...route });
  assert.equal(completion.object, "text_completion");
  const embeddings = await client.embeddings.create({ model: "m", input: ["a", "b"], ...route });
  assert.equal(embeddings.data.length, 2);
  assert.ok(embeddings.data[0].embedding.length > 0);
});

test("the Responses API, whole and streamed", async () => {
  const response = await client.responses.create({ model: "m", input: "hi", ...route });
  assert.equal(response.status, "completed");
  assert.match(response.output_text, /org\/llama/);
  const again = await client.responses.retrieve(response.id);
  assert.equal(again.id, response.id);
  const stream = await client.responses.create({ model: "m", input: "hi", stream: true, ...route });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
});

test("the model list", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ["llama"]);
});

test("each error is the SDK's own class", async () => {
  const cases = [
    [{ model: "m", messages: hello }, OpenAI.BadRequestError, "missing_routing"],
    [{ model: "m", messages: hello, baseten: { model_id: "nope" } }, OpenAI.NotFoundError, "model_not_found"],
    [
      { model: "m", messages: hello, baseten: { model_id: "llama", deployment_id: "nope" } },
      OpenAI.NotFoundError,
      "deployment_not_found",
    ],
    [
      { model: "m", messages: hello, baseten: { model_id: "llama", deployment_id: "down" } },
      OpenAI.InternalServerError,
      "upstream_unavailable",
    ],
    [{ model: "m", messages: hello, ...route, simulate: { status: 429 } }, OpenAI.RateLimitError, "429"],
    [{ model: "m", messages: hello, ...route, simulate: { status: 422 } }, OpenAI.UnprocessableEntityError, "422"],
  ];
  for (const [body, kind, code] of cases) {
    await assert.rejects(client.chat.completions.create(body), (error) => {
      assert.ok(error instanceof kind, `${JSON.stringify(body)}: ${error.constructor.name}`);
      assert.equal(error.code, code);
      return true;
    });
  }
  const stranger = new OpenAI({ baseURL: `${url}/v1/direct`, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(stranger.chat.completions.create({ model: "m", messages: hello, ...route }), OpenAI.AuthenticationError);
});

test("a stream that breaks raises in the SDK", async () => {
  const stream = await client.chat.completions.create({
    model: "m",
    messages: hello,
    stream: true,
    ...route,
    simulate: { fail_after: 2, gap_ms: 20 },
  });
  await assert.rejects(async () => {
    for await (const chunk of stream) void chunk;
  }, OpenAI.APIError);
});

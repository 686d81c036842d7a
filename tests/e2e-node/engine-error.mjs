// For the real-engine suite (tests/engine): one chat request through the official OpenAI Node
// SDK, printing the class of the error it raises (or "ok"). Not a test file of its own.
//   node engine-error.mjs BASE_URL MODEL_ID PROMPT_WORDS
import OpenAI from "openai";

const [baseURL, modelId, words] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
try {
  await client.chat.completions.create({
    model: "tiny",
    max_tokens: 4,
    messages: [{ role: "user", content: Array(Number(words)).fill("hello").join(" ") }],
    baseten: { model_id: modelId },
  });
  console.log("ok");
} catch (e) {
  console.log(`${e.constructor.name} ${e.status}`);
}

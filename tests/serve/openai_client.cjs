// The official `openai` JS library against the gateway: a completion, a stream with usage, a 401.
// Usage: NODE_PATH=<node_modules with openai> node openai_client.cjs BASE_URL API_KEY MODEL
const { OpenAI } = require("openai");

async function main() {
  const [baseURL, apiKey, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const messages = [{ role: "user", content: "hi" }];
  const { data: plain, response } = await client.chat.completions.create({ model, messages }).withResponse();
  const chunks = [];
  const stream = await client.chat.completions.create({
    model, messages, stream: true, stream_options: { include_usage: true },
  });
  for await (const chunk of stream) chunks.push(chunk);
  let refused = null;
  try {
    await new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 }).models.list();
  } catch (err) {
    refused = { status: err.status, code: err.code, name: err.constructor.name };
  }
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  console.log(JSON.stringify({ plain, tier: response.headers.get("x-cascade-tier"), chunks, refused, models }));
}

main().catch((err) => { console.error(String(err)); process.exit(1); });

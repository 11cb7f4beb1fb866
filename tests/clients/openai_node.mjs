// The official OpenAI Node SDK against hubproxy: chat (plain and streamed) and responses.create
// (plain, streamed, and with a tool). Prints one JSON line of what it got; the test checks it.
// Usage: NODE_PATH=<dir with node_modules> node openai_node.mjs BASE_URL KEY
import { createRequire } from "node:module";

const require = createRequire(process.env.NODE_PATH + "/");
const OpenAI = require("openai").default;
const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const tools = [{ type: "function", name: "get_weather", description: "weather", parameters: { type: "object", properties: {} } }];

const chat = await client.chat.completions.create({ model: "deepseek-chat", messages: [{ role: "user", content: "hi" }] });
let streamed = "";
for await (const chunk of await client.chat.completions.create({
  model: "deepseek-chat", messages: [{ role: "user", content: "hi" }], stream: true,
})) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
}
const response = await client.responses.create({ model: "deepseek-chat", input: "say hello" });
let responseStream = "";
let completed = null;
for await (const event of await client.responses.create({ model: "deepseek-chat", input: "say hello", stream: true })) {
  if (event.type === "response.output_text.delta") responseStream += event.delta;
  if (event.type === "response.completed") completed = event.response;
}
const called = await client.responses.create({ model: "tools", input: "weather?", tools });
let refused = null;
try {
  await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] });
} catch (error) {
  refused = { status: error.status, code: error.code };
}
console.log(JSON.stringify({
  chat: chat.choices[0].message.content,
  streamed,
  response: response.output_text,
  responseStream,
  completedUsage: completed?.usage?.output_tokens,
  call: called.output[0],
  refused,
}));

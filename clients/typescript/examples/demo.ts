/**
 * The classic contextd demo, then a client-side tool round trip.
 *
 *   npm run build && node dist/examples/demo.js [TARGET]     # TARGET defaults to 127.0.0.1:61900
 */
import { randomBytes } from "node:crypto";

import { connect, needsToolResults, type JsonObject, type ToolCall } from "../src/index.js";

/** The client-side tool: contextd asks, this process answers. */
function getWeather(call: ToolCall): string {
  return `sunny, 21 C in ${String(call.arguments?.["city"] ?? "?")}`;
}

function sorted(value: JsonObject): string {
  return JSON.stringify(Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b))));
}

async function main(target: string): Promise<void> {
  const run = randomBytes(4).toString("hex");
  const alpha = `session_alpha-${run}`;
  const beta = `session_beta-${run}`;
  const client = connect(target);
  try {
    const turns: [string, string, JsonObject | undefined][] = [
      [alpha, "Hello, I am John.", { user_id: "john_doe" }],
      [alpha, "Tell me about climate change.", { topic: "environment" }],
      [beta, "Hi, I am Jane.", { user_id: "jane_doe", location: "NYC" }],
      [alpha, "What are some solutions?", undefined],
    ];
    for (const [session, message, context] of turns) {
      const reply = await client.interact(session, message, { context });
      console.log(`[${session}] > ${message}`);
      console.log(`[${session}] < ${reply.response}`);
      console.log(`[${session}]   context: ${sorted(reply.updatedContext ?? {})}`);
    }
    console.log(`[${alpha}] messages: ${(await client.getSession(alpha)).messageCount}`);

    const session = `tools-${run}`;
    const conversation = await client.converse(session, {
      tools: [{ name: "get_weather", description: "Current weather for a city.", inputSchema: { type: "object" } }],
      toolHandler: getWeather,
    });
    const message = '/call get_weather {"city": "Paris"}';
    console.log(`[${session}] > ${message}`);
    for await (const event of conversation.send(message)) {
      if (event.case === "completed" && needsToolResults(event.value)) {
        for (const call of event.value.toolCalls) {
          console.log(`[${session}]   tool call ${call.name}(${JSON.stringify(call.arguments)})`);
        }
      } else if (event.case === "completed") {
        console.log(`[${session}] < ${event.value.response}`);
      }
    }
    await conversation.close();
  } finally {
    client.close();
  }
}

await main(process.argv[2] ?? "127.0.0.1:61900");

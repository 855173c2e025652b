// The same small program in every client: a session, a turn, a stream, a Converse turn with a
// client-side tool, and an error. Usage: node quickstart.mjs [HOST:PORT]
import { randomUUID } from "node:crypto";
import { Code, ConnectError, connect } from "@contextd/client";

const client = connect(process.argv[2] ?? "127.0.0.1:61900");
try {
  const sid = `quickstart-${randomUUID().slice(0, 8)}`;
  await client.createSession(sid, { tools: [{ name: "get_weather", description: "Current weather of a city" }] });
  const reply = await client.interact(sid, "Hello, I am John.", { context: { user_id: "john" } });
  console.log("interact:", reply.response);
  let text = "";
  for await (const event of client.streamResponse(sid, "Tell me more.")) {
    if (event.case === "delta") text += event.value.text;
  }
  console.log("stream:", text);
  const conv = await client.converse(sid, { toolHandler: (call) => `sunny in ${call.arguments?.city}` });
  console.log("converse:", (await conv.ask('/call get_weather {"city": "Paris"}')).response);
  await conv.close();
  try {
    await client.getSession("no-such-session");
  } catch (error) {
    if (!(error instanceof ConnectError) || error.code !== Code.NotFound) throw error;
    console.log("error:", "NOT_FOUND");
  }
} finally {
  client.close();
}

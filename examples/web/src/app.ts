/**
 * The page's script: one of each call a web app makes to contextd. Interact over gRPC-Web, a
 * streamed turn over Connect shown token by token, and an agent loop over the Converse
 * WebSocket in which the page answers the model's tool call itself, then cancels a slow turn.
 * The server's address comes from `?server=http://host:port` (default: the page's own origin).
 */
import { ConverseSocket, FinishReason, connectWeb, type ConverseResponse } from "../../../clients/typescript/src/web.js";

const server = new URL(location.href).searchParams.get("server") ?? location.origin;
const element = (id: string) => document.getElementById(id)!;
const show = (id: string, text: string) => {
  element(id).textContent = text;
};

/** What the stream panel showed after each token (read by the browser test). */
const snapshots: string[] = [];
(globalThis as unknown as { snapshots: string[] }).snapshots = snapshots;

/** The page's own tool: the model calls it, the page answers. */
function lookup(args: { q?: unknown }): string {
  return `${String(args.q)} is a systems programming language`;
}

/** The next `completed` or `error` event, answering tool calls on the way. */
async function untilEndOfTurn(events: AsyncIterator<ConverseResponse>): Promise<ConverseResponse> {
  for (;;) {
    const next = await events.next();
    if (next.done) throw new Error("the socket closed during a turn");
    const event = next.value.event;
    if (event.case === "completed" || event.case === "error") return next.value;
  }
}

async function main(): Promise<void> {
  show("server", server);
  const sessionId = `page-${Math.random().toString(16).slice(2, 10)}`;
  const grpcWeb = connectWeb(server, { protocol: "grpc-web" });
  const connect = connectWeb(server, { protocol: "connect" });

  const reply = await grpcWeb.interact.interact({ sessionId, message: "hello from the page" });
  show("grpc-web", reply.response);

  const stream = element("stream");
  stream.textContent = "";
  for await (const item of connect.interact.streamResponse({ sessionId, message: "/delay 30 one two three four five six" })) {
    if (item.event.case === "delta") {
      stream.textContent += item.event.value.text;
      snapshots.push(stream.textContent ?? "");
    }
  }

  let text = "";
  for await (const item of grpcWeb.interact.streamResponse({ sessionId, message: "seven eight" })) {
    if (item.event.case === "delta") text += item.event.value.text;
  }
  show("grpc-web-stream", text);

  // The agent loop: the page declares a tool, the model calls it, the page answers.
  const socket = await ConverseSocket.open(server, `${sessionId}-agent`, {
    tools: [{ name: "lookup", description: "Looks things up.", inputSchema: { type: "object" } }],
  });
  const events = socket[Symbol.asyncIterator]();
  const opened = await events.next();
  if (opened.done || opened.value.event.case !== "opened") throw new Error("no opened event");
  socket.send({ frame: { case: "userMessage", value: { message: '/call lookup {"q": "rust"}' } } });
  let end = await untilEndOfTurn(events);
  while (end.event.case === "completed" && end.event.value.finishReason === FinishReason.TOOL_CALLS) {
    const results = end.event.value.toolCalls.map((call) => ({
      toolCallId: call.toolCallId,
      content: lookup((call.arguments ?? {}) as { q?: unknown }),
    }));
    socket.send({ frame: { case: "toolResults", value: { results } } });
    end = await untilEndOfTurn(events);
  }
  if (end.event.case !== "completed") throw new Error(`the tool turn failed: ${end.event.value?.message}`);
  show("tool", end.event.value.response);

  // A slow turn, cancelled after its first token.
  const words = Array.from({ length: 100 }, (_, i) => `w${i}`).join(" ");
  socket.send({ frame: { case: "userMessage", value: { message: `/delay 100 ${words}` } } });
  for (;;) {
    const next = await events.next();
    if (next.done) throw new Error("the socket closed during the slow turn");
    if (next.value.event.case === "delta") break;
  }
  socket.send({ frame: { case: "cancel", value: {} } });
  end = await untilEndOfTurn(events);
  if (end.event.case !== "completed") throw new Error("cancel did not complete the turn");
  show("cancel", `finish reason: ${FinishReason[end.event.value.finishReason]}`);
  socket.close();
  show("status", "done");
}

main().catch((error: unknown) => show("status", `failed: ${String(error)}`));

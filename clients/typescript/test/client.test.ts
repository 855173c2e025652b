/** The wrapper itself against a live contextd: turns, streams, Converse tool handlers, errors. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { dirname, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import {
  Code,
  ConnectError,
  WindowStrategy,
  connect,
  needsToolResults,
  pb,
  type ContextdClient,
  type ToolCall,
} from "../src/index.js";
import { Server } from "./server.js";

const WEATHER = { name: "get_weather", description: "Current weather for a city.", inputSchema: { type: "object" } };
const fresh = (prefix: string) => `${prefix}-${randomBytes(4).toString("hex")}`;

async function rejectsWith(promise: Promise<unknown>, code: Code, text?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ConnectError, String(error));
    assert.equal(error.code, code, error.message);
    if (text) assert.ok(error.rawMessage.includes(text), error.rawMessage);
    return true;
  });
}

describe("ContextdClient", () => {
  let server: Server;
  let client: ContextdClient;

  before(async () => {
    server = await Server.start();
    client = connect(server.address, { timeoutMs: 30000 });
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  test("results are plain data: enum names, numbers, dates, no protobuf bookkeeping", async () => {
    const sid = fresh("ts-plain");
    const reply = await client.interact(sid, "hello");
    assert.equal(reply.finishReason, "FINISH_REASON_STOP");
    assert.equal(typeof reply.usage!.outputTokens, "number");
    assert.ok(!("$typeName" in reply) && !("$typeName" in reply.usage!));
    const session = await client.getSession(sid);
    assert.equal(session.messageCount, 2);
    assert.ok(session.createTime instanceof Date);
    assert.equal(session.state, "SESSION_STATE_IDLE");
    const [user] = (await client.listMessages(sid)).items;
    assert.equal(user!.role, "MESSAGE_ROLE_USER");
    assert.equal(user!.index, 0);
    // A JSON round trip keeps everything (no bigint to choke JSON.stringify).
    assert.equal(JSON.parse(JSON.stringify(reply)).finishReason, "FINISH_REASON_STOP");
    // The generated messages and enums stay available for those who want them.
    assert.equal(pb.FinishReason[pb.FinishReason.STOP], "STOP");
    assert.equal(pb.InteractResponseSchema.typeName, "contextd.v1.InteractResponse");
  });

  test("session lifecycle", async () => {
    const sid = fresh("ts-crud");
    const created = await client.createSession(sid, { systemPrompt: "Be brief.", context: { user: { name: "Ann" } }, labels: { team: "a" } });
    assert.equal(created.sessionId, sid);
    assert.deepEqual(created.context, { user: { name: "Ann" } });
    assert.equal(created.state, "SESSION_STATE_IDLE");
    assert.ok(created.createTime!.getTime() > 0);

    const updated = await client.updateSession(sid, { context: { user: { age: 41 }, tier: "gold" }, labels: { env: "test" }, removeLabels: ["team"] });
    assert.deepEqual(updated.context, { user: { name: "Ann", age: 41 }, tier: "gold" });
    assert.deepEqual(updated.labels, { env: "test" });
    assert.equal(updated.systemPrompt, "Be brief.");
    assert.deepEqual((await client.updateSession(sid, { context: { tier: null } })).context, { user: { name: "Ann", age: 41 } });

    const ids: string[] = [];
    for await (const session of client.iterSessions(2)) ids.push(session.sessionId);
    assert.ok(ids.includes(sid));

    await client.interact(sid, "hello");
    const page = await client.listMessages(sid, { pageSize: 1 });
    assert.deepEqual(page.items.map((m) => m.role), ["MESSAGE_ROLE_USER"]);
    assert.ok(page.nextPageToken);
    const rest = await client.listMessages(sid, { pageToken: page.nextPageToken });
    assert.deepEqual(rest.items.map((m) => m.role), ["MESSAGE_ROLE_ASSISTANT"]);

    assert.equal(await client.deleteSession(sid), 2);
    await rejectsWith(client.getSession(sid), Code.NotFound, sid);
  });

  test("errors carry the status code", async () => {
    const sid = fresh("ts-err");
    await client.createSession(sid);
    await rejectsWith(client.createSession(sid), Code.AlreadyExists);
    await rejectsWith(client.interact("not a valid id!", "hi"), Code.InvalidArgument, "session_id");
    await rejectsWith(
      (async () => {
        for await (const _ of client.streamResponse(sid, "")) void _;
      })(),
      Code.InvalidArgument,
    );
  });

  test("interact and streamResponse agree", async () => {
    const context = { user_id: "john_doe", topic: "environment" };
    const unary = await client.interact(fresh("ts-unary"), "Tell me about climate change.", { context });
    const events = [];
    for await (const event of client.streamResponse(fresh("ts-stream"), "Tell me about climate change.", { context })) events.push(event);
    assert.equal(events[0]?.case, "started");
    const last = events[events.length - 1]!;
    assert.equal(last.case, "completed");
    const deltas = events.flatMap((e) => (e.case === "delta" ? [e.value.text] : []));
    assert.ok(deltas.length > 1);
    assert.equal(deltas.join(""), unary.response);
    assert.equal(last.case === "completed" && last.value.response, unary.response);
    assert.equal(unary.response, "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment.");
    assert.deepEqual(unary.updatedContext, context);
    assert.equal(unary.finishReason, "FINISH_REASON_STOP");
    assert.ok(unary.usage!.outputTokens > 0);
  });

  test("breaking out of a stream cancels it", async () => {
    const sid = fresh("ts-early");
    for await (const event of client.streamResponse(sid, "/delay 200 one two three four five")) {
      assert.equal(event.case, "started");
      break;
    }
    assert.equal((await client.interact(sid, "again")).response, "You said 'again'.");
    assert.equal((await client.getSession(sid)).messageCount, 2);
  });

  test("interact with a tool handler", async () => {
    const sid = fresh("ts-tools");
    await client.createSession(sid, { tools: [WEATHER, { name: "broken" }] });
    const seen: string[] = [];
    const result = await client.interact(sid, '/call get_weather {"city": "Rome"}\n/call broken {}', {
      toolHandler: async (call: ToolCall) => {
        seen.push(call.name);
        if (call.name === "broken") throw new Error("no such sensor");
        return { forecast: "sunny", city: call.arguments?.["city"] ?? null };
      },
    });
    assert.deepEqual(seen, ["get_weather", "broken"]);
    assert.equal(result.finishReason, "FINISH_REASON_STOP");
    assert.equal(result.response, 'Tool get_weather returned: {"forecast":"sunny","city":"Rome"}\nTool broken failed: no such sensor');
    const tools = (await client.listMessages(sid)).items.filter((m) => m.role === "MESSAGE_ROLE_TOOL");
    assert.deepEqual(tools.map((m) => m.isError), [false, true]);
  });

  test("manual tool round trip", async () => {
    const sid = fresh("ts-manual");
    await client.createSession(sid, { tools: [WEATHER] });
    const paused = await client.interact(sid, '/call get_weather {"city": "Oslo"}');
    assert.ok(needsToolResults(paused));
    assert.deepEqual(paused.toolCalls[0]!.arguments, { city: "Oslo" });
    assert.equal((await client.getSession(sid)).state, "SESSION_STATE_AWAITING_TOOL_RESULTS");
    await rejectsWith(client.interact(sid, "hello?"), Code.FailedPrecondition, paused.toolCalls[0]!.toolCallId);
    const done = await client.interact(sid, "", { toolResults: [{ toolCallId: paused.toolCalls[0]!.toolCallId, content: "snow" }] });
    assert.equal(done.response, "Tool get_weather returned: snow");
    assert.equal(done.turnId, paused.turnId);
  });

  test("server-side tools", async () => {
    const sid = fresh("ts-builtin");
    const kinds = [];
    for await (const event of client.streamResponse(sid, '/call context_set {"patch": {"mood": "happy"}}')) kinds.push(event.case);
    assert.ok(kinds.includes("toolResult"));
    const listed = await client.listTools(sid);
    assert.deepEqual(listed.tools.map((t) => t.name), ["context_get", "context_set", "history_search"]);
    assert.equal(listed.tools[0].annotations?.readOnlyHint, true);
    await client.updateSession(sid, { tools: [{ name: "find", annotations: { readOnlyHint: true } }] });
    assert.deepEqual((await client.listTools(sid)).sessionTools[0].annotations, { readOnlyHint: true });
    await client.updateSession(sid, { tools: [] });
    const output = await client.callTool("context_get", {}, sid);
    assert.deepEqual(output.structuredContent, { mood: "happy" });
    assert.equal(output.isError, false);
    assert.equal((await client.callTool("context_get", { key: "nope" }, sid)).isError, true);
    await rejectsWith(client.callTool("nope", {}, sid), Code.NotFound);
  });

  test("server-side tool selection", async () => {
    const sid = fresh("ts-select");
    const created = await client.createSession(sid, { tools: [WEATHER], serverTools: ["context_*"] });
    assert.deepEqual(created.serverTools?.patterns, ["context_*"]);
    assert.deepEqual((await client.listTools(sid)).offeredTools, ["context_get", "context_set", "get_weather"]);
    const updated = await client.updateSession(sid, { serverTools: [] });
    assert.deepEqual(updated.serverTools?.patterns, []);
    assert.deepEqual((await client.listTools(sid)).offeredTools, ["get_weather"]);
    await rejectsWith(client.updateSession(sid, { serverTools: ["time__*"] }), Code.InvalidArgument);
    await rejectsWith(
      client.updateSession(sid, { serverTools: ["context_get"], resetServerTools: true }),
      Code.InvalidArgument,
    );
    assert.deepEqual((await client.getSession(sid)).serverTools?.patterns, []);
    const reset = await client.updateSession(sid, { resetServerTools: true });
    assert.equal(reset.serverTools, undefined);
    assert.deepEqual((await client.listTools(sid)).offeredTools, [
      "context_get",
      "context_set",
      "history_search",
      "get_weather",
    ]);
    const conversation = await client.converse(fresh("ts-select-open"), { serverTools: ["history_search"] });
    assert.deepEqual(conversation.session.serverTools?.patterns, ["history_search"]);
    await conversation.close();
    const violation = await client.callTool("context_get", { city: "Paris" }, sid);
    assert.equal(violation.isError, true);
    assert.match(violation.content, /city/);
  });

  test("converse with a tool handler", async () => {
    const sid = fresh("ts-conv");
    const conversation = await client.converse(sid, { tools: [WEATHER], context: { user_id: "ann" }, toolHandler: () => "cloudy" });
    assert.ok(conversation.sessionCreated);
    assert.deepEqual(conversation.session.context, { user_id: "ann" });
    assert.equal((await conversation.ask("Hi.")).response, "You said 'Hi.'. User ann is active.");
    const kinds = [];
    for await (const event of conversation.send('/call get_weather {"city": "Lima"}')) kinds.push(event.case);
    assert.deepEqual(kinds.slice(0, 3), ["started", "toolCall", "completed"]);
    assert.equal(kinds[kinds.length - 1], "completed");
    assert.ok(kinds.slice(3).includes("delta"));
    const failed = [];
    for await (const event of conversation.sendToolResults([{ toolCallId: "call_unknown", content: "x" }])) failed.push(event);
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.case, "error");
    assert.equal(failed[0]!.case === "error" && failed[0]!.value.code, Code.InvalidArgument);
    await conversation.close();
    assert.equal((await client.getSession(sid)).messageCount, 6);
  });

  test("converse without a handler, and cancel", async () => {
    const sid = fresh("ts-conv-manual");
    const conversation = await client.converse(sid, { tools: [WEATHER] });
    const paused = await conversation.ask('/call get_weather {"city": "Kyiv"}');
    assert.ok(needsToolResults(paused));
    let response = "";
    for await (const event of conversation.sendToolResults([{ toolCallId: paused.toolCalls[0]!.toolCallId, content: "rain" }])) {
      if (event.case === "completed") response = event.value.response;
    }
    assert.equal(response, "Tool get_weather returned: rain");
    const events = conversation.send("/delay 300 a b c d e f g h");
    assert.equal((await events.next()).value?.case, "started");
    conversation.cancel();
    let last;
    for await (const event of events) last = event;
    assert.equal(last?.case, "completed");
    assert.equal(last?.case === "completed" && last.value.finishReason, "FINISH_REASON_CANCELLED");
    await conversation.close();
    assert.equal((await client.getSession(sid)).messageCount, 4);
  });

  test("abandoning a paused turn: interact, streamResponse, and converse cancel", async () => {
    const sid = fresh("ts-abandon");
    await client.createSession(sid, { tools: [WEATHER] });
    const paused = await client.interact(sid, '/call get_weather {"city": "Oslo"}');
    assert.ok(needsToolResults(paused));
    const done = await client.interact(sid, "", { abandonToolCalls: true });
    assert.equal(done.finishReason, "FINISH_REASON_CANCELLED");
    assert.equal(done.turnId, paused.turnId);
    assert.equal(done.response, "");
    const tool = (await client.listMessages(sid)).items[2]!;
    assert.equal(tool.toolCallId, paused.toolCalls[0]!.toolCallId);
    assert.equal(tool.content, "cancelled by the client");
    assert.equal(tool.isError, true);
    await rejectsWith(client.interact(sid, "", { abandonToolCalls: true }), Code.InvalidArgument, "nothing to abandon");

    await client.interact(sid, '/call get_weather {"city": "Rome"}');
    const cases: string[] = [];
    let last;
    for await (const event of client.streamResponse(sid, "", { abandonToolCalls: true })) {
      cases.push(event.case ?? "");
      last = event;
    }
    assert.deepEqual(cases, ["started", "completed"]);
    assert.equal(last?.case === "completed" && last.value.finishReason, "FINISH_REASON_CANCELLED");

    const conversation = await client.converse(sid);
    assert.ok(needsToolResults(await conversation.ask('/call get_weather {"city": "Lima"}')));
    const abandoned = await conversation.abandonToolCalls();
    assert.equal(abandoned.finishReason, "FINISH_REASON_CANCELLED");
    assert.equal((await conversation.ask("next")).response, "You said 'next'.");
    // cancel() while paused abandons too; the next turn's reply is its own.
    assert.ok(needsToolResults(await conversation.ask('/call get_weather {"city": "Kyiv"}')));
    conversation.cancel();
    assert.equal((await conversation.ask("and now")).response, "You said 'and now'.");
    await rejectsWith(conversation.abandonToolCalls(), Code.FailedPrecondition);
    await conversation.close();
    assert.equal((await client.getSession(sid)).state, "SESSION_STATE_IDLE");
    const errors = (await client.listMessages(sid)).items.filter((m) => m.role === "MESSAGE_ROLE_TOOL");
    assert.deepEqual(
      errors.map((m) => [m.content, m.isError]),
      Array(4).fill(["cancelled by the client", true]),
    );
  });

  test("idempotency keys make turns safe to repeat", async () => {
    const sid = fresh("ts-idem");
    const key = randomBytes(16).toString("hex");
    const first = await client.interact(sid, "only once", { idempotencyKey: key });
    const again = await client.interact(sid, "only once", { idempotencyKey: key });
    assert.equal(again.turnId, first.turnId);
    assert.equal(again.response, first.response);
    let last;
    for await (const event of client.streamResponse(sid, "only once", { idempotencyKey: key })) last = event;
    assert.equal(last?.case === "completed" && last.value.turnId, first.turnId);
    const conversation = await client.converse(sid);
    assert.equal((await conversation.ask("only once", undefined, key)).turnId, first.turnId);
    await conversation.close();
    await rejectsWith(client.interact(sid, "another request", { idempotencyKey: key }), Code.InvalidArgument, "different request");
    assert.equal((await client.getSession(sid)).messageCount, 2);
  });

  test("leaving a converse turn early cancels it, and the next replies are their own", async () => {
    const slow = "/delay 1000 " + Array.from({ length: 30 }, (_, i) => `w${i}`).join(" ");
    const sid = fresh("ts-conv-break");
    const conversation = await client.converse(sid);
    for await (const event of conversation.send(slow)) {
      if (event.case === "delta") break;
    }
    assert.equal((await conversation.ask("one")).response, "You said 'one'.");
    await assert.rejects(async () => {
      for await (const event of conversation.send(slow)) {
        if (event.case === "delta") throw new Error("left by a throw");
      }
    }, /left by a throw/);
    assert.equal((await conversation.ask("two")).response, "You said 'two'.");
    // A turn whose events were read only in part is ended by the next send.
    const partial = conversation.send(slow);
    assert.equal((await partial.next()).value?.case, "started");
    assert.equal((await conversation.ask("three")).response, "You said 'three'.");
    await conversation.close();
    const page = await client.listMessages(sid);
    assert.deepEqual(page.items.map((m) => m.content), ["one", "You said 'one'.", "two", "You said 'two'.", "three", "You said 'three'."]);
  });

  test("a turn paused for tools stays paused when left", async () => {
    const sid = fresh("ts-conv-paused");
    const conversation = await client.converse(sid, { tools: [WEATHER] });
    for await (const event of conversation.send('/call get_weather {"city": "Oslo"}')) {
      if (event.case === "completed") break;
    }
    const session = await client.getSession(sid);
    assert.equal(session.state, "SESSION_STATE_AWAITING_TOOL_RESULTS");
    let response = "";
    for await (const event of conversation.sendToolResults([{ toolCallId: session.pendingToolCalls[0]!.toolCallId, content: "snow" }])) {
      if (event.case === "completed") response = event.value.response;
    }
    assert.equal(response, "Tool get_weather returned: snow");
    await conversation.close();
  });

  test("window settings, expiry and models are reachable", async () => {
    const sid = fresh("ts-window");
    const expires = new Date(Math.floor(Date.now() / 1000) * 1000 + 3600_000);
    const created = await client.createSession(sid, {
      expireTime: expires,
      window: { strategy: WindowStrategy.SUMMARIZE, summarizeThresholdPercent: 50, summarizerModel: "echo" },
    });
    assert.equal(created.expireTime!.getTime(), expires.getTime());
    assert.equal(created.window?.strategy, "WINDOW_STRATEGY_SUMMARIZE");
    assert.equal(created.window?.summarizeThresholdPercent, 50);
    assert.equal(created.summary, undefined);
    const later = new Date(expires.getTime() + 3600_000);
    const updated = await client.updateSession(sid, { expireTime: later, window: { strategy: "WINDOW_STRATEGY_DISABLED" } });
    assert.equal(updated.expireTime!.getTime(), later.getTime());
    assert.equal(updated.window?.strategy, "WINDOW_STRATEGY_DISABLED");
    const conversation = await client.converse(fresh("ts-window-conv"), { expireTime: later, window: { strategy: "WINDOW_STRATEGY_DISABLED" } });
    assert.equal(conversation.session.window?.strategy, "WINDOW_STRATEGY_DISABLED");
    await conversation.close();
    const models = await client.listModels();
    assert.equal(models.defaultModel, "echo");
    assert.ok(models.models.some((m) => m.name === "echo"));
  });

  test("previewContext shows a pending summary and writes it with summarize", async () => {
    const sid = fresh("ts-fold");
    const message = "the quick brown fox jumps over the lazy dog, and counts another turn";
    await client.createSession(sid, { maxContextTokens: 300, window: { strategy: "WINDOW_STRATEGY_SUMMARIZE" } });
    const pending = (p: { entries: { kind: string }[] }) => p.entries.some((e) => e.kind === "CONTEXT_ENTRY_KIND_PENDING_SUMMARY");
    let turns = 0;
    while (!pending(await client.previewContext(sid, message))) {
      await client.interact(sid, message);
      assert.ok(++turns < 60, "the window never reached its threshold");
    }
    assert.equal((await client.getSession(sid)).summary, undefined, "a preview writes nothing by default");
    const written = await client.previewContext(sid, message, undefined, { summarize: true });
    assert.equal(written.summaryKept, true);
    assert.ok(!pending(written));
    const summary = (await client.getSession(sid)).summary;
    assert.ok(summary && summary.text.length > 0, JSON.stringify(summary));
  });

  test("every unary call takes an AbortSignal", async () => {
    const aborted = AbortSignal.abort();
    const sid = fresh("ts-abort");
    await client.createSession(sid);
    await rejectsWith(client.getSession(sid, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.createSession(fresh("ts-abort"), {}, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.listSessions({ signal: aborted }), Code.Canceled);
    await rejectsWith(client.updateSession(sid, { systemPrompt: "x" }, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.listMessages(sid, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.previewContext(sid, "hi", undefined, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.listModels({ signal: aborted }), Code.Canceled);
    await rejectsWith(client.listTools("", { signal: aborted }), Code.Canceled);
    await rejectsWith(client.callTool("context_get", { key: "a" }, sid, { signal: aborted }), Code.Canceled);
    await rejectsWith(client.interact(sid, "hi", { signal: aborted }), Code.Canceled);
    await rejectsWith(client.deleteSession(sid, { signal: aborted }), Code.Canceled);
    // Nothing ran: the session is still there, unchanged.
    assert.equal((await client.getSession(sid)).systemPrompt, "");
  });

  test("converse open errors reject", async () => {
    await rejectsWith(client.converse("bad id!"), Code.InvalidArgument);
  });

  test("bearer token and headers are accepted", async () => {
    const other = connect(server.address, { token: "abc", headers: { "x-trace": "1" } });
    try {
      assert.equal((await other.interact(fresh("ts-token"), "hi")).response, "You said 'hi'.");
    } finally {
      other.close();
    }
  });

  test("an unreachable server is UNAVAILABLE", async () => {
    const down = connect("127.0.0.1:1", { timeoutMs: 5000 });
    try {
      await rejectsWith(down.listTools(), Code.Unavailable);
    } finally {
      down.close();
    }
  });

  test("the demo example runs", async () => {
    const demo = resolve(dirname(fileURLToPath(import.meta.url)), "../examples/demo.js");
    const { stdout } = await promisify(execFile)(process.execPath, [demo, server.address], { timeout: 60000 });
    assert.ok(stdout.includes("< You said 'What are some solutions?'. User john_doe is active. Current topic: environment."), stdout);
    assert.ok(stdout.includes('context: {"topic":"environment","user_id":"john_doe"}'), stdout);
    assert.ok(stdout.includes('context: {"location":"NYC","user_id":"jane_doe"}'), stdout);
    assert.ok(stdout.includes("messages: 6"), stdout);
    assert.ok(stdout.includes("< Tool get_weather returned: sunny, 21 C in Paris"), stdout);
  });
});

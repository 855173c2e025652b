/**
 * The web protocols against a live contextd, with clients nobody here wrote: connect-node's
 * gRPC-Web and Connect transports (as connect-web speaks them in a browser) over HTTP/1.1 and
 * HTTP/2, and `buf curl` with its default protocol (Connect) and `--protocol grpcweb`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

import { InteractService } from "../src/gen/contextd/v1/interact_pb.js";
import { SessionService } from "../src/gen/contextd/v1/session_pb.js";
import { REPO, Server } from "./server.js";

const run = promisify(execFile);
const BUF = resolve(REPO, "clients/typescript/node_modules/.bin/buf");
const fresh = (prefix: string) => `${prefix}-${randomBytes(4).toString("hex")}`;

/** Runs one turn each way (unary and streamed) and one failing call over `transport`. */
async function exercise(transport: Transport, label: string): Promise<void> {
  const interact = createClient(InteractService, transport);
  const sessions = createClient(SessionService, transport);
  const sid = fresh(label);

  const reply = await interact.interact({ sessionId: sid, message: "hello from the web" });
  assert.equal(reply.sessionId, sid);
  assert.match(reply.response, /hello from the web/);

  const kinds: string[] = [];
  let text = "";
  for await (const item of interact.streamResponse({ sessionId: sid, message: "stream it" })) {
    kinds.push(item.event.case ?? "?");
    if (item.event.case === "delta") text += item.event.value.text;
  }
  assert.equal(kinds[0], "started");
  assert.equal(kinds.at(-1), "completed");
  assert.ok(kinds.filter((k) => k === "delta").length > 1, kinds.join(","));
  assert.match(text, /stream it/);

  await assert.rejects(sessions.getSession({ sessionId: `${sid}-missing` }), (error: unknown) => {
    assert.ok(error instanceof ConnectError, String(error));
    assert.equal(error.code, Code.NotFound);
    assert.match(error.rawMessage, /missing/);
    return true;
  });
}

describe("web protocols", () => {
  let server: Server;
  let base: string;

  before(async () => {
    server = await Server.start();
    base = `http://${server.address}`;
  });

  after(async () => {
    await server.stop();
  });

  test("gRPC-Web over HTTP/1.1 (connect-node)", async () => {
    await exercise(createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }), "web-h1");
  });

  test("gRPC-Web over HTTP/2 (connect-node)", async () => {
    await exercise(createGrpcWebTransport({ baseUrl: base, httpVersion: "2" }), "web-h2");
  });

  test("Connect, JSON, over HTTP/1.1 (connect-node)", async () => {
    await exercise(createConnectTransport({ baseUrl: base, httpVersion: "1.1" }), "connect-json");
  });

  test("Connect, protobuf, over HTTP/2 (connect-node)", async () => {
    await exercise(
      createConnectTransport({ baseUrl: base, httpVersion: "2", useBinaryFormat: true }),
      "connect-proto",
    );
  });

  test("Connect with a deadline (connect-node)", async () => {
    const interact = createClient(InteractService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    await assert.rejects(
      interact.interact({ sessionId: fresh("late"), message: "/delay 10000 slow" }, { timeoutMs: 200 }),
      (error: unknown) => {
        assert.ok(error instanceof ConnectError, String(error));
        assert.equal(error.code, Code.DeadlineExceeded);
        return true;
      },
    );
  });

  test("buf curl (Connect, its default protocol)", async () => {
    const sid = fresh("buf-connect");
    const { stdout } = await run(BUF, [
      "curl", "--data", JSON.stringify({ sessionId: sid, message: "hi over connect" }),
      `${base}/contextd.v1.InteractService/Interact`,
    ]);
    const reply = JSON.parse(stdout);
    assert.equal(reply.sessionId, sid);
    assert.match(reply.response, /hi over connect/);

    const streamed = await run(BUF, [
      "curl", "--data", JSON.stringify({ sessionId: sid, message: "streamed" }),
      `${base}/contextd.v1.InteractService/StreamResponse`,
    ]);
    assert.match(streamed.stdout, /"started"/);
    assert.match(streamed.stdout, /"completed"/);

    await assert.rejects(
      run(BUF, ["curl", "--data", JSON.stringify({ sessionId: `${sid}-missing` }), `${base}/contextd.v1.SessionService/GetSession`]),
      (error: { stderr?: string; stdout?: string }) => {
        assert.match(`${error.stdout}${error.stderr}`, /not_found/);
        return true;
      },
    );
  });

  test("buf curl --protocol grpcweb", async () => {
    const sid = fresh("buf-web");
    const { stdout } = await run(BUF, [
      "curl", "--protocol", "grpcweb", "--http2-prior-knowledge",
      "--data", JSON.stringify({ sessionId: sid, message: "hi over grpc-web" }),
      `${base}/contextd.v1.InteractService/Interact`,
    ]);
    const reply = JSON.parse(stdout);
    assert.equal(reply.sessionId, sid);
    assert.match(reply.response, /hi over grpc-web/);

    const streamed = await run(BUF, [
      "curl", "--protocol", "grpcweb",
      "--data", JSON.stringify({ sessionId: sid, message: "streamed" }),
      `${base}/contextd.v1.InteractService/StreamResponse`,
    ]);
    // One JSON document per message.
    assert.match(streamed.stdout, /"started"/);
    assert.match(streamed.stdout, /"completed"/);

    await assert.rejects(
      run(BUF, [
        "curl", "--protocol", "grpcweb",
        "--data", JSON.stringify({ sessionId: `${sid}-missing` }),
        `${base}/contextd.v1.SessionService/GetSession`,
      ]),
      (error: { stderr?: string }) => {
        assert.match(error.stderr ?? "", /not_found/);
        return true;
      },
    );
  });
});
